package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports (the kernel fixes it for user space).
const clockTick = 10 * time.Millisecond

// cpuTime returns the CPU time (user + system) that process pid has used,
// read from /proc/<pid>/stat (fields 14 and 15, utime and stime). pid 0
// means this process.
func cpuTime(pid int) (time.Duration, error) {
	name := "/proc/self/stat"
	if pid > 0 {
		name = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parsing %s", name)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("parsing %s: %d fields", name, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parsing %s: utime %q stime %q", name, f[11], f[12])
	}
	return time.Duration(ut+st) * clockTick, nil
}

// systemCPU returns the busy and total CPU time of the whole machine from
// the first line of /proc/stat (busy excludes idle and iowait).
func systemCPU() (busy, total time.Duration, err error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, 0, fmt.Errorf("reading /proc/stat: %w", sc.Err())
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 6 || fields[0] != "cpu" {
		return 0, 0, fmt.Errorf("parsing /proc/stat: %q", sc.Text())
	}
	var sum, idle int64
	// user nice system idle iowait irq softirq steal (guest time is
	// already counted in user).
	for i, v := range fields[1:min(len(fields), 9)] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parsing /proc/stat: %w", err)
		}
		sum += n
		if i == 3 || i == 4 {
			idle += n
		}
	}
	return time.Duration(sum-idle) * clockTick, time.Duration(sum) * clockTick, nil
}

// machine describes the machine the benchmark ran on.
type machine struct {
	NProc       int    `json:"nproc"`
	GOMAXPROCS  int    `json:"gomaxprocs"`
	CPUModel    string `json:"cpu_model"`
	Kernel      string `json:"kernel"`
	GoVersion   string `json:"go_version"`
	LoadStart   string `json:"loadavg_start"`
	LoadEnd     string `json:"loadavg_end,omitempty"`
	Hostname    string `json:"hostname,omitempty"`
	MemTotal    string `json:"mem_total,omitempty"`
	Virtualized string `json:"hypervisor,omitempty"`
	// Fsync is the latency of appending 4 KiB to a file and calling fsync
	// in the gateway's data directory (about what the audit journal or a
	// SQLite WAL commit with synchronous=FULL costs): the floor under every
	// write-ahead audit record.
	Fsync *fsyncProbe `json:"fsync,omitempty"`
}

type fsyncProbe struct {
	Dir        string  `json:"dir"`
	Filesystem string  `json:"filesystem,omitempty"`
	N          int     `json:"n"`
	MeanMS     float64 `json:"mean_ms"`
	P50MS      float64 `json:"p50_ms"`
	P90MS      float64 `json:"p90_ms"`
	P99MS      float64 `json:"p99_ms"`
	// CPUUS is the CPU time this process spent per append and fsync
	// (getrusage around the loop): on a virtual machine a durable write
	// costs CPU as well as time, and every write-ahead record pays it.
	CPUUS float64 `json:"cpu_us,omitempty"`
}

// probeFsync times n appends of a 4 KiB block, each followed by fsync, to a
// temporary file in dir.
func probeFsync(dir string, n int) (*fsyncProbe, error) {
	f, err := os.CreateTemp(dir, ".fsync-probe-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	block := make([]byte, 4096)
	lat := make([]int64, 0, n)
	var ru0, ru1 syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru0); err != nil {
		return nil, err
	}
	for i := range n {
		block[0] = byte(i)
		t0 := time.Now()
		if _, err := f.WriteAt(block, int64(i)*4096); err != nil {
			return nil, err
		}
		if err := f.Sync(); err != nil {
			return nil, err
		}
		lat = append(lat, int64(time.Since(t0)))
	}
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru1); err != nil {
		return nil, err
	}
	cpu := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
	slices.Sort(lat)
	var sum int64
	for _, v := range lat {
		sum += v
	}
	p := &fsyncProbe{Dir: dir, N: n, MeanMS: round3(ms(sum / int64(n))), P50MS: round3(ms(percentile(lat, 0.5))),
		P90MS: round3(ms(percentile(lat, 0.9))), P99MS: round3(ms(percentile(lat, 0.99))),
		CPUUS: round3(float64(cpu) / 1e3 / float64(n))}
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) == nil {
		p.Filesystem = fsName(st.Type)
	}
	return p, nil
}

func fsName(magic int64) string {
	switch magic {
	case 0xEF53:
		return "ext4"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x01021994:
		return "tmpfs"
	case 0x794c7630:
		return "overlayfs"
	case 0x2fc12fc1:
		return "zfs"
	}
	return fmt.Sprintf("0x%x", magic)
}

func describeMachine() machine {
	m := machine{NProc: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version(), LoadStart: loadavg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "model name":
				if m.CPUModel == "" {
					m.CPUModel = strings.TrimSpace(v)
				}
			case "flags":
				if m.Virtualized == "" && strings.Contains(v, " hypervisor") {
					m.Virtualized = "yes (cpuinfo flag)"
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				m.MemTotal = strings.TrimSpace(v)
			}
		}
	}
	m.Hostname, _ = os.Hostname()
	return m
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
