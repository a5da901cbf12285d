package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// SpawnMosquitto is the IngestConfig.Mosquitto value that has the baseline
// run on a Mosquitto of its own: the machine's binary, on a free port,
// with no limit on the messages it queues or has in flight per client. The
// stock configuration holds 20 messages in flight and 1,000 queued per
// client and drops the rest, so its one subscriber of a large or
// pipelining fleet receives a fraction of what it is sent, and the baseline
// would measure the drops instead of the relay.
const SpawnMosquitto = "spawn"

// mosquittoProc is a Mosquitto started for the baseline.
type mosquittoProc struct {
	cmd    *exec.Cmd
	addr   string
	stderr bytes.Buffer
}

func startMosquitto(ctx context.Context, dir string) (*mosquittoProc, error) {
	exe, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/mosquitto"); serr != nil {
			return nil, fmt.Errorf("no mosquitto binary (apt-get install mosquitto, or pass --mosquitto ADDR): %w", err)
		}
		exe = "/usr/sbin/mosquitto"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := filepath.Join(dir, fmt.Sprintf("mosquitto-%d.conf", port))
	body := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 0\nlog_dest stderr\nlog_type error\n", port)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		return nil, err
	}
	m := &mosquittoProc{addr: fmt.Sprintf("127.0.0.1:%d", port)}
	m.cmd = exec.CommandContext(ctx, exe, "-c", conf)
	m.cmd.Stderr = &m.stderr
	m.cmd.Cancel = func() error { return m.cmd.Process.Signal(syscall.SIGTERM) }
	if err := m.cmd.Start(); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", m.addr, time.Second)
		if err == nil {
			c.Close()
			return m, nil
		}
		if time.Now().After(deadline) {
			m.stop()
			return nil, fmt.Errorf("mosquitto did not listen on %s: %v\n%s", m.addr, err, m.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (m *mosquittoProc) stop() {
	m.cmd.Process.Signal(syscall.SIGTERM)
	m.cmd.Wait()
}
