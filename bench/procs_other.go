//go:build !linux

package bench

import "os/exec"

func setParentDeathSignal(*exec.Cmd) {}

func startChild(cmd *exec.Cmd) error { return cmd.Start() }
