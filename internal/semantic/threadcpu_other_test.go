//go:build !linux

package semantic_test

// threadCPU is not measured outside Linux.
func threadCPU() int64 { return 0 }
