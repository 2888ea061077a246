package flowtest_test

import (
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/pipeline"
	"github.com/gatehouse/gatehouse/internal/pipeline/flowtest"
)

func TestMemory(t *testing.T) {
	shared := &flowtest.Memory{}
	flowtest.TestStore(t, func(now func() time.Time) pipeline.FlowStore {
		shared.Now = now
		return shared
	})
}
