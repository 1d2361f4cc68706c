//go:build !linux

package main

import (
	"errors"
	"syscall"
)

func sysProcAttr() *syscall.SysProcAttr { return nil }

func readProcStatus(int) (rss, hwm int64, err error) {
	return 0, 0, errors.New("memory sampling reads /proc/<pid>/status: Linux only")
}
