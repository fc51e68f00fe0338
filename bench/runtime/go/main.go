// gobench — the Go side of `make bench-runtime`: the same measurements as
// bench/runtime/rtbench.c, doing the same work the same way with
// goroutines, channels, sync.WaitGroup and time.Sleep. One measurement per
// run, named by the first argument, printed as "<key> <value>" lines;
// bench/runtime.sh sets GOMAXPROCS to the thread count of the jobq side
// (1 for switch and chan, 2 for the rest). Standard library only.
//
//	switch       two goroutines yielding (runtime.Gosched) to each other
//	chan         unbuffered ping-pong, per one-way hand-off
//	spawn_join   1M x (wg.Add(1); go func(){ wg.Done() }()), wg.Wait()
//	parked       1M goroutines, each touched 1 KiB of stack, parked on one
//	             channel: RSS bytes per goroutine
//	timers       1M goroutines sleeping a random 0-1 s: wall ms from the
//	             first spawn to the last wake, worst lateness ms
//	idle         prints "ready" and blocks reading stdin, so runtime.sh can
//	             count the idle process's context switches from outside
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

const million = 1000000

func benchSwitch() {
	const n = 20 * million
	var wg sync.WaitGroup
	wg.Add(2)
	t0 := time.Now()
	for k := 0; k < 2; k++ {
		go func() {
			for i := 0; i < n; i++ {
				runtime.Gosched()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	// Each of the 2n yields is one switch to the other goroutine.
	fmt.Printf("switch_ns %.2f\n", float64(time.Since(t0).Nanoseconds())/(2*n))
}

func benchChan(key string, n int) {
	var wg sync.WaitGroup
	ping := make(chan int)
	pong := make(chan int)
	wg.Add(2)
	t0 := time.Now()
	go func() {
		for i := 0; i < n; i++ {
			v := <-ping
			pong <- v
		}
		wg.Done()
	}()
	go func() {
		for i := 0; i < n; i++ {
			ping <- i
			<-pong
		}
		wg.Done()
	}()
	wg.Wait()
	// 2n one-way hand-offs: n pings and n pongs.
	fmt.Printf("%s %.2f\n", key, float64(time.Since(t0).Nanoseconds())/float64(2*n))
}

func benchSpawnJoin() {
	const n = million
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() { wg.Done() }()
	}
	wg.Wait()
	fmt.Printf("spawn_join_ns %.2f\n", float64(time.Since(t0).Nanoseconds())/n)
}

// A named field of a /proc status file, in the file's unit.
func statusField(path, field string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field+":") {
			f := strings.Fields(line[len(field)+1:])
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return -1
}

//go:noinline
func touch(buf *[1024]byte) {
	for i := 0; i < len(buf); i += 64 {
		buf[i] = byte(i)
	}
}

func benchParked() {
	const n = million
	var wg, done sync.WaitGroup
	ch := make(chan byte)
	before := statusField("/proc/self/status", "VmRSS") * 1024
	wg.Add(n)
	done.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			// Touch 1 KiB of stack, as a handler with a small buffer would.
			var buf [1024]byte
			touch(&buf)
			wg.Done()
			<-ch
			done.Done()
		}()
	}
	wg.Wait()
	// Every goroutine is past its touch; give the last ones the moment
	// they need to park on the channel, as the C side waits for all to
	// be counted parked.
	time.Sleep(100 * time.Millisecond)
	after := statusField("/proc/self/status", "VmRSS") * 1024
	fmt.Printf("parked_bytes %.0f\n", float64(after-before)/n)
	close(ch)
	done.Wait()
}

// xorshift64 with a fixed seed: the C side draws the same durations.
func nextRand(s *uint64) uint64 {
	x := *s
	x ^= x << 13
	x ^= x >> 7
	x ^= x << 17
	*s = x
	return x
}

func benchTimers() {
	const n = million
	seed := uint64(0x9E3779B97F4A7C15)
	sleep := make([]time.Duration, n)
	woke := make([]int64, n)
	late := make([]int64, n)
	for i := range sleep {
		sleep[i] = time.Duration(nextRand(&seed) % 1000000000)
	}
	var wg sync.WaitGroup
	base := time.Now()
	t0 := time.Since(base)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			start := time.Since(base)
			time.Sleep(sleep[i])
			end := time.Since(base)
			woke[i] = int64(end)
			late[i] = int64(end - (start + sleep[i]))
			wg.Done()
		}(i)
	}
	wg.Wait()
	var last, worst int64
	for i := 0; i < n; i++ {
		if woke[i] > last {
			last = woke[i]
		}
		if late[i] > worst {
			worst = late[i]
		}
	}
	fmt.Printf("timers_1m_ms %.1f\n", float64(last-int64(t0))/1e6)
	fmt.Printf("timers_late_max_ms %.2f\n", float64(worst)/1e6)
}

func benchIdle() {
	fmt.Println("ready")
	// Blocks in the netpoller (stdin is a pipe) with no timer armed, as
	// an idle jobq runtime sleeps in epoll.
	bufio.NewReader(os.Stdin).ReadString('\n')
}

func main() {
	what := ""
	if len(os.Args) > 1 {
		what = os.Args[1]
	}
	switch what {
	case "switch":
		benchSwitch()
	case "chan":
		benchChan("chan_pingpong_ns", 5*million)
	case "chan_mt":
		benchChan("chan_pingpong_mt_ns", 2*million)
	case "spawn_join":
		benchSpawnJoin()
	case "parked":
		benchParked()
	case "timers":
		benchTimers()
	case "idle":
		benchIdle()
	default:
		fmt.Fprintln(os.Stderr, "usage: gobench switch|chan|chan_mt|spawn_join|parked|timers|idle")
		os.Exit(2)
	}
}
