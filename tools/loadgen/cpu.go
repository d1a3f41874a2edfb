package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the CPU times in /proc (USER_HZ, 100 on Linux).
const userHZ = 100

// watched is a process whose CPU use is reported per run (-watch name=pid).
type watched struct {
	name string
	pid  string // "self" for loadgen
}

func parseWatch(s string) ([]watched, error) {
	var out []watched
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		name, pid, ok := strings.Cut(part, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("-watch: want name=pid, got %q", part)
		}
		if _, err := strconv.Atoi(pid); err != nil && pid != "self" {
			return nil, fmt.Errorf("-watch: %q is not a pid", pid)
		}
		out = append(out, watched{name, pid})
	}
	return out, nil
}

// cpuSample is the CPU time used so far by each watched process and by the machine.
type cpuSample struct {
	at           time.Time
	procs        []float64 // seconds; -1 when unreadable
	busy, totalM float64   // machine: busy and total CPU seconds over all cores
}

func sampleCPU(ws []watched) cpuSample {
	s := cpuSample{at: time.Now(), procs: make([]float64, len(ws))}
	for i, w := range ws {
		s.procs[i] = procCPU(w.pid)
	}
	if data, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(data), "\n")
		f := strings.Fields(line)
		var total, idle float64
		for i, v := range f[1:] {
			n, _ := strconv.ParseFloat(v, 64)
			if i >= 8 { // guest times are already in user and nice
				break
			}
			total += n
			if i == 3 || i == 4 { // idle, iowait
				idle += n
			}
		}
		s.totalM, s.busy = total/userHZ, (total-idle)/userHZ
	}
	return s
}

// procCPU is the user+system CPU seconds of a process, -1 if it cannot be read.
func procCPU(pid string) float64 {
	data, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return -1
	}
	// The command name (field 2) may hold spaces; the fields after it are plain.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return -1
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / userHZ
}

// cpuReport is the CPU each watched process used between two samples, in % of one core,
// and how busy the whole machine was, in % of all its cores.
func cpuReport(ws []watched, a, b cpuSample) string {
	if len(ws) == 0 {
		return ""
	}
	secs := b.at.Sub(a.at).Seconds()
	var sb strings.Builder
	var watchedSecs float64
	for i, w := range ws {
		if a.procs[i] < 0 || b.procs[i] < 0 {
			continue
		}
		used := b.procs[i] - a.procs[i]
		watchedSecs += used
		fmt.Fprintf(&sb, " cpu_%s=%.0f%%", w.name, 100*used/secs)
	}
	if d := b.totalM - a.totalM; d > 0 {
		busy := b.busy - a.busy
		// Everything else on the machine (other programs, the kernel's own threads), in %
		// of one core: what a concurrent test suite or build takes from the run.
		fmt.Fprintf(&sb, " cpu_other=%.0f%% cpu_machine_busy=%.0f%%", 100*max(0, busy-watchedSecs)/secs, 100*busy/d)
	}
	return sb.String()
}
