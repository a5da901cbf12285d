package herd_test

import (
	"reflect"
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
		if _, err := (herd.DeviceUpdate{Name: new("ok"), Model: new(strings.Repeat("x", herd.MaxModelLen+1))}).Apply(&d); herd.ErrorCode(err) != herd.EINVALID || !reflect.DeepEqual(d, before) {
			t.Fatalf("a bad model: %v, device %+v", err, d)
		}
		if changed, err := (herd.DeviceUpdate{}).Apply(&d); err != nil || len(changed) != 0 || !reflect.DeepEqual(d, before) {
			t.Fatalf("an empty update: %v, %v", changed, err)
		}
		// Labels merge by key: a value sets its key, nil removes it, and a
		// key not named stays.
		d.Labels = map[string]string{"ring": "beta", "old": "x", "floor": "3"}
		changed, err = herd.DeviceUpdate{Labels: map[string]*string{"ring": new("canary"), "old": nil, "gone": nil}}.Apply(&d)
		if err != nil || !slices.Equal(changed, []string{"labels"}) || !reflect.DeepEqual(d.Labels, map[string]string{"ring": "canary", "floor": "3"}) {
			t.Fatalf("a label merge: changed %v, labels %v, err %v", changed, d.Labels, err)
		}
		if changed, err := (herd.DeviceUpdate{Labels: map[string]*string{"ring": new("canary")}}).Apply(&d); err != nil || len(changed) != 0 {
			t.Fatalf("the same label again: changed %v, err %v", changed, err)
		}
		before = d
		for _, u := range []herd.DeviceUpdate{
			{Labels: map[string]*string{"Ring": new("x")}},
			{Labels: map[string]*string{"ring": new(strings.Repeat("v", herd.MaxLabelValueLen+1))}},
			{Labels: map[string]*string{"ring": new("\xff")}},
		} {
			if _, err := u.Apply(&d); herd.ErrorCode(err) != herd.EINVALID || !reflect.DeepEqual(d, before) {
				t.Fatalf("a bad label %v: %v, labels %v", u.Labels, err, d.Labels)
			}
		}
		changed, err = herd.DeviceUpdate{ClearLabels: true, Labels: map[string]*string{"a": new("1")}}.Apply(&d)
		if err != nil || !slices.Equal(changed, []string{"labels"}) || !reflect.DeepEqual(d.Labels, map[string]string{"a": "1"}) {
			t.Fatalf("clearing the labels: changed %v, labels %v, err %v", changed, d.Labels, err)
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
