package sim

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// ReadDevices reads a key file: one "key token" pair per line, the format
// WriteDevices writes, so that several simulator processes can share one
// provisioned fleet.
func ReadDevices(path string) ([]Device, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ds []Device
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, token, ok := strings.Cut(line, " ")
		if !ok || key == "" || strings.TrimSpace(token) == "" {
			return nil, fmt.Errorf("%s:%d: want \"key token\"", path, n)
		}
		ds = append(ds, Device{Key: key, Token: strings.TrimSpace(token)})
	}
	return ds, sc.Err()
}

// WriteDevices writes a key file for ReadDevices.
func WriteDevices(path string, ds []Device) error {
	var b strings.Builder
	b.WriteString("# herd simulate key file: key token\n")
	for _, d := range ds {
		b.WriteString(d.Key + " " + d.Token + "\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// Shard returns the part i (0-based) of n of the devices, for one of n
// simulator processes sharing a fleet.
func Shard(ds []Device, i, n int) []Device {
	var out []Device
	for k, d := range ds {
		if k%n == i {
			out = append(out, d)
		}
	}
	return out
}
