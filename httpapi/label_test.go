package httpapi_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestDevices_Labels: labels set on create (one and batch) come back on
// reads and lists, the label filters find them, and bad label input is a
// 400 naming what is wrong.
func TestDevices_Labels(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db)
		f := e.mustCreateFleet()
		bob := f.bobToken.Secret // admin of n1
		r := e.do("POST", "/v1/devices", bob, map[string]any{"node_id": fmt.Sprint(f.n1.ID), "key": "lab-1", "labels": map[string]string{"ring": "canary", "floor": "3"}})
		r.wantStatus(t, http.StatusCreated)
		var one herd.Device
		r.decode(t, &one)
		if one.Labels["ring"] != "canary" || len(one.Labels) != 2 {
			t.Fatalf("created %s", r.Body)
		}
		r = e.do("POST", "/v1/devices/batch", bob, map[string]any{"devices": []map[string]any{
			{"node_id": fmt.Sprint(f.n1.ID), "key": "lab-2", "labels": map[string]string{"ring": "beta"}},
			{"node_id": fmt.Sprint(f.n1.ID), "key": "lab-3"},
		}})
		r.wantStatus(t, http.StatusCreated)
		if !strings.Contains(string(r.Body), `"labels":{}`) {
			t.Fatalf("a device without labels has no {}: %s", r.Body)
		}
		r = e.do("GET", fmt.Sprintf("/v1/devices/%d", one.ID), bob, nil)
		r.wantStatus(t, http.StatusOK)
		var got herd.Device
		r.decode(t, &got)
		if got.Labels["floor"] != "3" {
			t.Fatalf("read %s", r.Body)
		}
		query := func(filters ...string) []string {
			t.Helper()
			v := url.Values{"filter": filters, "sort": {"key"}}
			r := e.do("GET", "/v1/devices?"+v.Encode(), bob, nil)
			r.wantStatus(t, http.StatusOK)
			var p herd.DevicePage
			r.decode(t, &p)
			var keys []string
			for _, d := range p.Items {
				if d.Labels == nil {
					t.Fatalf("listed device %s has no labels object", d.Key)
				}
				if strings.HasPrefix(d.Key, "lab-") {
					keys = append(keys, d.Key)
				}
			}
			return keys
		}
		for _, tt := range []struct {
			filters []string
			want    []string
		}{
			{[]string{"label.ring:eq:canary"}, []string{"lab-1"}},
			{[]string{"label.ring:in:canary|beta"}, []string{"lab-1", "lab-2"}},
			{[]string{"label.ring:ne:canary"}, []string{"lab-2", "lab-3"}},
			{[]string{"label.ring:exists:true"}, []string{"lab-1", "lab-2"}},
			{[]string{"label.ring:exists:false"}, []string{"lab-3"}},
			{[]string{"label.ring:exists:true", "label.floor:eq:3"}, []string{"lab-1"}},
			{[]string{"label.nope:eq:x"}, nil},
		} {
			if got := query(tt.filters...); !slices.Equal(got, tt.want) {
				t.Errorf("%v: got %v, want %v", tt.filters, got, tt.want)
			}
		}
		for _, tt := range []struct {
			filter string
			parts  []string
		}{
			{"label.Ring:eq:x", []string{`"Ring" is not a label key`}},
			{"label.:eq:x", []string{`"" is not a label key`}},
			{"label.ring:gt:x", []string{`operator "gt" does not apply to labels`}},
			{"label.ring:like:x", []string{`unknown operator "like"`}},
			{"label.ring:exists:yes", []string{"exists takes true or false"}},
			{"ring:exists:true", []string{`unknown field "ring"`}},
			{"name:exists:true", []string{`unknown operator "exists"`}},
		} {
			r := e.do("GET", "/v1/devices?"+url.Values{"filter": {tt.filter}}.Encode(), bob, nil)
			r.wantError(t, http.StatusBadRequest, herd.EINVALIDFILTER, tt.parts...)
		}
		// A sort on a label: by value, the devices without it last either
		// way, paged by the cursor one device at a time.
		for sort, want := range map[string][]string{"label.ring": {"lab-2", "lab-1", "lab-3"}, "-label.ring": {"lab-1", "lab-2", "lab-3"}} {
			var keys []string
			v := url.Values{"sort": {sort}, "limit": {"1"}}
			for range 20 {
				r := e.do("GET", "/v1/devices?"+v.Encode(), bob, nil)
				r.wantStatus(t, http.StatusOK)
				var p herd.DevicePage
				r.decode(t, &p)
				for _, d := range p.Items {
					if strings.HasPrefix(d.Key, "lab-") {
						keys = append(keys, d.Key)
					}
				}
				if p.NextCursor == "" {
					break
				}
				v.Set("cursor", p.NextCursor)
			}
			if !slices.Equal(keys, want) {
				t.Errorf("sort=%s: got %v, want %v", sort, keys, want)
			}
		}
		e.do("GET", "/v1/devices?sort=label.Ring", bob, nil).wantError(t, http.StatusBadRequest, herd.EINVALIDSORT, `"Ring" is not a label key`)
		r = e.do("POST", "/v1/devices", bob, map[string]any{"node_id": fmt.Sprint(f.n1.ID), "key": "lab-bad", "labels": map[string]string{"a b": "x"}})
		r.wantError(t, http.StatusBadRequest, herd.EINVALID, `label key "a b"`)
	})
}
