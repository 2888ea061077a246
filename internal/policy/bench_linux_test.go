//go:build linux

package policy_test

import (
	"runtime"
	"slices"
	"syscall"
	"testing"
	"unsafe"

	"github.com/gatehouse/gatehouse/internal/policy"
	"github.com/gatehouse/gatehouse/internal/verdict"
)

// threadCPU returns the calling thread's CPU time in nanoseconds.
func threadCPU() int64 {
	const clockThreadCPUTimeID = 3
	var ts syscall.Timespec
	syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTimeID, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Nano()
}

// BenchmarkDecideCPU reports the median and 99th percentile of the CPU
// time of single decisions at 100 policies, measured on a locked thread.
// Unlike wall-clock percentiles it does not count time the thread waits
// for a CPU, so it stays meaningful on a shared, loaded machine. It
// includes the clock read (a system call, a few hundred nanoseconds).
func BenchmarkDecideCPU(b *testing.B) {
	set, _ := benchSet(b)
	for _, action := range []policy.Action{policy.CallTool, policy.ListTools} {
		b.Run(string(action), func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			req := benchRequest(action)
			if d := set.Decide(req); d.Outcome != verdict.Allow {
				b.Fatalf("benchmark request decided %s", d.Outcome)
			}
			lat := make([]int64, 0, b.N)
			b.ReportAllocs()
			for b.Loop() {
				start := threadCPU()
				set.Decide(req)
				lat = append(lat, threadCPU()-start)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2]), "cpu-p50-ns")
			b.ReportMetric(float64(lat[len(lat)*99/100]), "cpu-p99-ns")
		})
	}
}
