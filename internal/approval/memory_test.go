package approval_test

import (
	"testing"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/approval/approvaltest"
)

func TestMemoryContract(t *testing.T) {
	approvaltest.TestStore(t, approval.NewMemory())
}
