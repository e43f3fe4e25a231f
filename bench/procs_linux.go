package bench

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// setParentDeathSignal has the kernel SIGKILL the child when the bench
// process dies without stopping it (killed, crashed).
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// The parent-death signal fires when the thread that forked the child
// exits, not the process: Go may end an OS thread (when a goroutine locked
// to it returns), so children are forked from one goroutine locked to its
// thread for the life of the process.
var (
	spawnOnce sync.Once
	spawnReqs chan func()
)

func startChild(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReqs = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for f := range spawnReqs {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	spawnReqs <- func() { errc <- cmd.Start() }
	return <-errc
}
