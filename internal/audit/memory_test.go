package audit_test

import (
	"testing"

	"github.com/gatehouse/gatehouse/internal/audit"
	"github.com/gatehouse/gatehouse/internal/audit/audittest"
)

func TestMemoryContract(t *testing.T) {
	audittest.Run(t, func(t *testing.T) audittest.Store { return audit.NewMemory() })
}
