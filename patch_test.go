package herd_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
)

func TestCheckVersion(t *testing.T) {
	if err := herd.CheckVersion("device", 1, 3, 0); err != nil {
		t.Fatalf("no version asked: %v", err)
	} else if err := herd.CheckVersion("device", 1, 3, 3); err != nil {
		t.Fatalf("the same version: %v", err)
	}
	err := herd.CheckVersion("device", 1, 3, 2)
	if herd.ErrorCode(err) != herd.EPRECONDITION || !strings.Contains(herd.ErrorMessage(err), "version 3, not 2") {
		t.Fatalf("stale: %v", err)
	}
}

func TestUpdates_Apply(t *testing.T) {
	t.Run("Device", func(t *testing.T) {
		d := herd.Device{ID: 1, NodeID: 2, Key: "k1", Name: "old", Model: "m", Firmware: "1.0", Status: herd.StatusOK}
		changed, err := herd.DeviceUpdate{Name: new(" new "), Model: new("m")}.Apply(&d)
		if err != nil || d.Name != "new" || d.Model != "m" || !slices.Equal(changed, []string{"name"}) {
			t.Fatalf("changed %v, device %+v, err %v", changed, d, err)
		}
		changed, err = herd.DeviceUpdate{Name: new("")}.Apply(&d)
		if err != nil || d.Name != "k1" || !slices.Equal(changed, []string{"name"}) {
			t.Fatalf("an empty name: changed %v, device %+v, err %v", changed, d, err)
		}
		before := d
		if _, err := (herd.DeviceUpdate{Name: new("ok"), Model: new(strings.Repeat("x", herd.MaxModelLen+1))}).Apply(&d); herd.ErrorCode(err) != herd.EINVALID || d != before {
			t.Fatalf("a bad model: %v, device %+v", err, d)
		}
		if changed, err := (herd.DeviceUpdate{}).Apply(&d); err != nil || len(changed) != 0 || d != before {
			t.Fatalf("an empty update: %v, %v", changed, err)
		}
	})
	t.Run("Node", func(t *testing.T) {
		n := herd.Node{ID: 1, Name: "a", Kind: "site"}
		if _, err := (herd.NodeUpdate{Kind: new(" ")}).Apply(&n); herd.ErrorCode(err) != herd.EINVALID || n.Kind != "site" {
			t.Fatalf("an empty kind: %v, %+v", err, n)
		}
		changed, err := herd.NodeUpdate{Name: new("b"), Kind: new("city")}.Apply(&n)
		if err != nil || !slices.Equal(changed, []string{"name", "kind"}) {
			t.Fatalf("changed %v, %v", changed, err)
		}
	})
	t.Run("User", func(t *testing.T) {
		u := herd.User{ID: 1, TenantID: 2, Name: "ana"}
		changed, err := herd.UserUpdate{Disabled: new(true)}.Apply(&u)
		if err != nil || !u.Disabled || !slices.Equal(changed, []string{"disabled"}) {
			t.Fatalf("changed %v, %+v, %v", changed, u, err)
		}
		if _, err := (herd.UserUpdate{Name: new("")}).Apply(&u); herd.ErrorCode(err) != herd.EINVALID || u.Name != "ana" {
			t.Fatalf("an empty name: %v, %+v", err, u)
		}
	})
	t.Run("Tenant", func(t *testing.T) {
		ten := herd.Tenant{ID: 1, Name: "acme"}
		if _, err := (herd.TenantUpdate{Name: new("a\x00b")}).Apply(&ten); herd.ErrorCode(err) != herd.EINVALID || ten.Name != "acme" {
			t.Fatalf("a NUL byte: %v, %+v", err, ten)
		}
	})
}
