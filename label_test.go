package herd_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
)

func TestDevice_ValidateLabels(t *testing.T) {
	many := map[string]string{}
	for i := range herd.MaxLabels + 1 {
		many[fmt.Sprintf("k%02d", i)] = "v"
	}
	for _, tt := range []struct {
		name   string
		labels map[string]string
		want   string // "" when valid; else a part of the message
	}{
		{"OK", map[string]string{"ring": "canary", "asset/tag-1_x.y": "", "a": strings.Repeat("é", 127)}, ""},
		{"ErrUpperKey", map[string]string{"Ring": "x"}, `label key "Ring"`},
		{"ErrEmptyKey", map[string]string{"": "x"}, `label key ""`},
		{"ErrLongKey", map[string]string{strings.Repeat("k", herd.MaxLabelKeyLen+1): "x"}, "1 to 63 characters"},
		{"ErrKeyChar", map[string]string{"a b": "x"}, `label key "a b"`},
		{"ErrLongValue", map[string]string{"ring": strings.Repeat("v", herd.MaxLabelValueLen+1)}, "labels.ring is longer than 255 bytes"},
		{"ErrBadUTF8", map[string]string{"ring": "\xff"}, "labels.ring is not valid UTF-8"},
		{"ErrTooMany", many, "65 labels, at most 64"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := herd.Device{NodeID: 1, Key: "k", Labels: tt.labels}
			err := d.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want valid", err)
				}
				return
			}
			if herd.ErrorCode(err) != herd.EINVALID || !strings.Contains(herd.ErrorMessage(err), tt.want) {
				t.Fatalf("got %v, want EINVALID with %q", err, tt.want)
			}
		})
	}
	t.Run("NilBecomesEmpty", func(t *testing.T) {
		d := herd.Device{NodeID: 1, Key: "k"}
		if err := d.Validate(); err != nil || d.Labels == nil {
			t.Fatalf("labels %v, err %v", d.Labels, err)
		}
	})
}
