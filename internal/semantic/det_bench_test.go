package semantic_test

import (
	"context"
	"runtime"
	"testing"

	"github.com/gatehouse/gatehouse/internal/semantic"
)

// BenchmarkDetector4KB screens the latency inputs with one built-in
// detector at a time (normalisation always runs), to show which detector
// a slow input is slow in. cpu-ns/op is the screening thread's CPU time.
func BenchmarkDetector4KB(b *testing.B) {
	ctx := context.Background()
	for _, only := range semantic.Detectors {
		off := map[semantic.Detector]bool{}
		for _, d := range semantic.Detectors {
			off[d] = d != only
		}
		e, err := semantic.New(semantic.Config{Disable: off})
		if err != nil {
			b.Fatal(err)
		}
		for _, in := range latencyInputs() {
			b.Run(string(only)+"/"+in.name, func(b *testing.B) {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				b.SetBytes(int64(len(in.text)))
				c0 := threadCPU()
				for b.Loop() {
					e.Screen(ctx, semantic.Input{Surface: in.surface, Text: in.text})
				}
				b.ReportMetric(float64(threadCPU()-c0)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}
