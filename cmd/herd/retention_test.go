package main_test

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestMain_RetentionFlags: the history's retentions take days or Go
// durations from a flag or its variable, default to 30 and 400 days, and
// refuse a rollup retention shorter than the readings'.
func TestMain_RetentionFlags(t *testing.T) {
	t.Parallel()
	m, _ := newMain(nil)
	if err := m.ParseFlags(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if m.Config.ReadingsRetention != 30*24*time.Hour || m.Config.RollupRetention != 400*24*time.Hour {
		t.Fatalf("default retentions %v and %v", m.Config.ReadingsRetention, m.Config.RollupRetention)
	}
	m, _ = newMain(map[string]string{"HERD_READINGS_RETENTION": "7d", "HERD_ROLLUP_RETENTION": "1d"})
	if err := m.ParseFlags(context.Background(), []string{"--rollup-retention", "2160h"}); err != nil {
		t.Fatal(err)
	}
	if m.Config.ReadingsRetention != 7*24*time.Hour || m.Config.RollupRetention != 90*24*time.Hour {
		t.Fatalf("retentions %v and %v, want 7d from the variable and 90d from the flag", m.Config.ReadingsRetention, m.Config.RollupRetention)
	}
	for _, tt := range []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"ErrRollupShorter", nil, []string{"--readings-retention", "60d", "--rollup-retention", "30d"}, []string{"--rollup-retention", "HERD_ROLLUP_RETENTION", `"30d"`, "60d"}},
		{"ErrNotADuration", nil, []string{"--readings-retention", "30days"}, []string{"readings-retention", "30days", "30d or 720h"}},
		{"ErrEnv", map[string]string{"HERD_ROLLUP_RETENTION": "a year"}, nil, []string{"--rollup-retention", "HERD_ROLLUP_RETENTION", "a year"}},
		{"ErrTooShort", nil, []string{"--readings-retention", "10m"}, []string{"--readings-retention", "1h or more"}},
		{"ErrNegativeDays", nil, []string{"--readings-retention", "-3d"}, []string{"readings-retention", "-3d"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, stderr := newMain(tt.env)
			err := m.ParseFlags(context.Background(), tt.args)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error() + stderr.String()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
		})
	}
}
