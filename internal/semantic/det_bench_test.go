package semantic_test

import (
	"context"
	"testing"

	"github.com/gatehouse/gatehouse/internal/semantic"
)

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
		for name, text := range benchTexts {
			b.Run(string(only)+"/"+name, func(b *testing.B) {
				b.SetBytes(int64(len(text)))
				for b.Loop() {
					e.Screen(ctx, semantic.Input{Surface: semantic.SurfaceToolOutput, Text: text})
				}
			})
		}
	}
}
