package herd_test

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/herd-iot/herd"
)

// telemetryArrival is the arrival time of every test message.
var telemetryArrival = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

const (
	arrivalMS = 1748779200000 // telemetryArrival in unix ms
	hourMS    = 3600000
	y2000MS   = 946684800000
)

func TestParseTelemetry(t *testing.T) {
	all := herd.ReadingTemperature | herd.ReadingHumidity | herd.ReadingPressure |
		herd.ReadingVoltage | herd.ReadingCurrent | herd.ReadingPower | herd.ReadingBattery |
		herd.ReadingRSSI | herd.ReadingUptimeS | herd.ReadingErrorCount | herd.ReadingStatus | herd.ReadingFirmware
	for _, tt := range []struct {
		name    string
		payload string
		want    []herd.Reading
	}{
		{"Object", `{"temperature":21.5,"rssi":-67}`, []herd.Reading{
			{TS: arrivalMS, Has: herd.ReadingTemperature | herd.ReadingRSSI, Temperature: 21.5, RSSI: -67},
		}},
		{"AllFields", `{"ts":1748779199000,"temperature":-3.25,"humidity":48,"pressure":1013.25e0,
			"voltage":3.3,"current":0.12,"power":1E-1,"battery":87.5,"rssi":-90,"uptime_s":86400,
			"error_count":0,"status":"alarm","firmware":"v2.3.1-ü"}`, []herd.Reading{{
			TS: 1748779199000, Has: all, Temperature: -3.25, Humidity: 48, Pressure: 1013.25,
			Voltage: 3.3, Current: 0.12, Power: 0.1, Battery: 87.5, RSSI: -90, UptimeS: 86400,
			Status: "alarm", Firmware: "v2.3.1-ü",
		}}},
		{"Array", ` [ {"status":"ok"} , {"status":"warn","ts":1748779100000} ] `, []herd.Reading{
			{TS: arrivalMS, Has: herd.ReadingStatus, Status: "ok"},
			{TS: 1748779100000, Has: herd.ReadingStatus, Status: "warn"},
		}},
		{"TSRFC3339", `{"ts":"2025-06-01T13:59:58.123+02:00"}`, []herd.Reading{{TS: arrivalMS - 1877}}},
		{"TSRFC3339NoFraction", `{"ts":"2025-06-01T11:00:00Z"}`, []herd.Reading{{TS: arrivalMS - hourMS}}},
		{"TSTruncatedToMillisecond", `{"ts":"2025-06-01T11:59:58.1239999Z"}`, []herd.Reading{{TS: arrivalMS - 1877}}},
		{"TSUnixMillis", `{"ts":1748779199999}`, []herd.Reading{{TS: arrivalMS - 1}}},
		{"TSOneHourAhead", `{"ts":1748782800000}`, []herd.Reading{{TS: arrivalMS + hourMS}}},
		{"TSYear2000", `{"ts":"2000-01-01T00:00:00Z"}`, []herd.Reading{{TS: y2000MS}}},
		{"TSDefault", `[{},{"ts":1748779100000},{}]`, []herd.Reading{{TS: arrivalMS}, {TS: 1748779100000}, {TS: arrivalMS}}},
		{"Heartbeat", "\n{ }\n", []herd.Reading{{TS: arrivalMS}}},
		{"ExtraSortedAndCompact", `{"zeta":1,"alpha":{"b": [1, 2] ,"a":"x y"},"temperature":1,"Temperature":"5"}`, []herd.Reading{{
			TS: arrivalMS, Has: herd.ReadingTemperature, Temperature: 1,
			Extra: []byte(`{"Temperature":"5","alpha":{"b":[1,2],"a":"x y"},"zeta":1}`),
		}}},
		{"ExtraNullAndLiterals", `{"note":null,"ok":true,"list":[]}`, []herd.Reading{{
			TS: arrivalMS, Extra: []byte(`{"list":[],"note":null,"ok":true}`),
		}}},
		{"ExtraEscapedKeys", `{"a\u0062":"\u00fc\"","q\"\\":1,"tab\t":2}`, []herd.Reading{{
			TS: arrivalMS, Extra: []byte(`{"ab":"\u00fc\"","q\"\\":1,"tab\u0009":2}`),
		}}},
		{"ExtraPerReading", `[{"a":1},{},{"b":2}]`, []herd.Reading{
			{TS: arrivalMS, Extra: []byte(`{"a":1}`)}, {TS: arrivalMS}, {TS: arrivalMS, Extra: []byte(`{"b":2}`)},
		}},
		{"ExtraSurrogatePair", `{"emoji":"\ud83d\ude00"}`, []herd.Reading{{
			TS: arrivalMS, Extra: []byte(`{"emoji":"\ud83d\ude00"}`),
		}}},
		{"EscapedKnownKey", `{"temp\u0065rature":2}`, []herd.Reading{{TS: arrivalMS, Has: herd.ReadingTemperature, Temperature: 2}}},
		{"EscapedStatus", `{"status":"\u006fk"}`, []herd.Reading{{TS: arrivalMS, Has: herd.ReadingStatus, Status: "ok"}}},
		{"NumberEdges", `{"temperature":-0,"humidity":1e-400,"pressure":1.7976931348623157e308,"rssi":-9223372036854775808,"uptime_s":9223372036854775807}`, []herd.Reading{{
			TS: arrivalMS, Has: herd.ReadingTemperature | herd.ReadingHumidity | herd.ReadingPressure | herd.ReadingRSSI | herd.ReadingUptimeS,
			Pressure: math.MaxFloat64, RSSI: math.MinInt64, UptimeS: math.MaxInt64,
		}}},
		{"FirmwareEmptyAnd100Bytes", `[{"firmware":""},{"firmware":"` + strings.Repeat("x", 100) + `"}]`, []herd.Reading{
			{TS: arrivalMS, Has: herd.ReadingFirmware},
			{TS: arrivalMS, Has: herd.ReadingFirmware, Firmware: strings.Repeat("x", 100)},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := herd.ParseTelemetry([]byte(tt.payload), telemetryArrival, herd.DefaultTelemetryMaxBytes)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
		t.Run(tt.name+"/NoAliasing", func(t *testing.T) {
			// The gateway's broker reuses its buffers; readings must not
			// point into the payload.
			payload := []byte(tt.payload)
			got, err := herd.ParseTelemetry(payload, telemetryArrival, herd.DefaultTelemetryMaxBytes)
			if err != nil {
				t.Fatal(err)
			}
			for i := range payload {
				payload[i] = 'x'
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("after overwriting the payload got %+v", got)
			}
		})
	}

	t.Run("MaxReadings", func(t *testing.T) {
		payload := "[" + strings.Repeat(`{},`, herd.MaxReadingsPerMessage-1) + "{}]"
		got, err := herd.ParseTelemetry([]byte(payload), telemetryArrival, 1<<20)
		if err != nil {
			t.Fatal(err)
		} else if len(got) != herd.MaxReadingsPerMessage {
			t.Fatalf("got %d readings", len(got))
		}
	})
	t.Run("ExactlyMaxBytes", func(t *testing.T) {
		payload := []byte(`{"temperature":1}`)
		if _, err := herd.ParseTelemetry(payload, telemetryArrival, len(payload)); err != nil {
			t.Fatal(err)
		}
	})
}

func TestParseTelemetryRefusals(t *testing.T) {
	for _, tt := range []struct {
		name    string
		payload string
		code    string
		parts   []string
	}{
		{"ErrTooLarge", `{"temperature":1, "pad":"` + strings.Repeat("x", 100) + `"}`, herd.ETOOLARGE, []string{"limit of 100"}},
		{"ErrNotUTF8", "{\"firmware\":\"\xff\"}", herd.EINVALID, []string{"UTF-8"}},
		{"ErrEmpty", ``, herd.EINVALID, []string{"not valid JSON"}},
		{"ErrSyntax", `{"temperature":1,}`, herd.EINVALID, []string{"not valid JSON", "at byte"}},
		{"ErrTrailingGarbage", `{"temperature":1} x`, herd.EINVALID, []string{"not valid JSON", "after top-level value"}},
		{"ErrTwoValues", `{} {}`, herd.EINVALID, []string{"not valid JSON"}},
		{"ErrTopLevelNumber", `42`, herd.EINVALID, []string{"object or an array of objects"}},
		{"ErrTopLevelNull", `null`, herd.EINVALID, []string{"object or an array of objects"}},
		{"ErrEmptyArray", `[ ]`, herd.EINVALID, []string{"empty array"}},
		{"ErrArrayOfNonObjects", `[{},[]]`, herd.EINVALID, []string{"readings[1]: not a JSON object"}},
		{"ErrTooManyReadings", "[" + strings.Repeat(`{},`, herd.MaxReadingsPerMessage) + "{}]", herd.EINVALID, []string{"more than 1000 readings"}},
		{"ErrNotANumber", `[{},{},{},{"temperature":"21.5"}]`, herd.EINVALID, []string{"readings[3].temperature: not a number"}},
		{"ErrNotANumberInObject", `{"battery":true}`, herd.EINVALID, []string{"battery: not a number"}},
		{"ErrFloatOverflow", `{"voltage":1e400}`, herd.EINVALID, []string{"voltage: 1e400 is out of range"}},
		{"ErrIntFraction", `{"rssi":1.5}`, herd.EINVALID, []string{"rssi: not an integer"}},
		{"ErrIntPointZero", `{"uptime_s":3.0}`, herd.EINVALID, []string{"uptime_s: not an integer"}},
		{"ErrIntExponent", `{"error_count":3e0}`, herd.EINVALID, []string{"error_count: not an integer"}},
		{"ErrIntOverflow", `{"uptime_s":9223372036854775808}`, herd.EINVALID, []string{"uptime_s: 9223372036854775808 is out of range"}},
		{"ErrIntString", `{"rssi":"-60"}`, herd.EINVALID, []string{"rssi: not an integer"}},
		{"ErrStatusUnknown", `{"status":"OK"}`, herd.EINVALID, []string{`status: "OK" is not one of ok, warn, alarm`}},
		{"ErrStatusNotString", `{"status":1}`, herd.EINVALID, []string{"status: not one of"}},
		// Connectivity is the gateway's to say, not the device's.
		{"ErrStatusOffline", `{"status":"offline"}`, herd.EINVALID, []string{`status: "offline" is not one of ok, warn, alarm`}},
		{"ErrFirmwareTooLong", `{"firmware":"` + strings.Repeat("x", 101) + `"}`, herd.EINVALID, []string{"firmware: longer than 100 bytes"}},
		{"ErrFirmwareNotString", `{"firmware":2}`, herd.EINVALID, []string{"firmware: not a string"}},
		{"ErrFirmwareNUL", `{"firmware":"v1\u0000"}`, herd.EINVALID, []string{`firmware: text may not contain \u0000`}},
		{"ErrNullField", `[{"temperature":null}]`, herd.EINVALID, []string{"readings[0].temperature: null", "omit"}},
		{"ErrNullTS", `{"ts":null}`, herd.EINVALID, []string{"ts: null"}},
		{"ErrDuplicateKnown", `{"temperature":1,"temperature":1}`, herd.EINVALID, []string{`duplicate key "temperature"`}},
		{"ErrDuplicateKnownEscaped", `[{"temperature":1,"temp\u0065rature":1}]`, herd.EINVALID, []string{`readings[0]: duplicate key "temperature"`}},
		{"ErrDuplicateTS", `{"ts":1748779199000,"ts":1748779199000}`, herd.EINVALID, []string{`duplicate key "ts"`}},
		{"ErrDuplicateExtra", `[{},{"b":1,"a":2,"b":1}]`, herd.EINVALID, []string{`readings[1]: duplicate key "b"`}},
		{"ErrTSBefore2000", `{"ts":946684799999}`, herd.EINVALID, []string{"ts: 946684799999 is before 2000-01-01"}},
		{"ErrTSBefore2000RFC3339", `{"ts":"1970-01-01T00:00:00Z"}`, herd.EINVALID, []string{"ts:", "before 2000-01-01"}},
		{"ErrTSNegative", `{"ts":-1}`, herd.EINVALID, []string{"ts: -1 is before 2000-01-01"}},
		{"ErrTSAhead", `{"ts":1748782800001}`, herd.EINVALID, []string{"ts: 1748782800001 is more than 1h0m0s after", "2025-06-01T12:00:00.000Z"}},
		{"ErrTSAheadRFC3339", `{"ts":"2025-06-01T13:00:00.001Z"}`, herd.EINVALID, []string{"ts:", "clock ahead"}},
		{"ErrTSNotRFC3339", `{"ts":"2025-06-01 12:00:00"}`, herd.EINVALID, []string{`ts: "2025-06-01 12:00:00" is not an RFC 3339 time`}},
		{"ErrTSFraction", `{"ts":1748779199000.0}`, herd.EINVALID, []string{"ts: 1748779199000.0 is not unix milliseconds: not an integer"}},
		{"ErrTSExponent", `{"ts":1.7e12}`, herd.EINVALID, []string{"ts: 1.7e12 is not unix milliseconds"}},
		{"ErrTSBool", `{"ts":true}`, herd.EINVALID, []string{"ts: not an RFC 3339 time string or unix milliseconds"}},
		{"ErrExtraNUL", `{"note":{"deep":["\u0000"]}}`, herd.EINVALID, []string{`note: text may not contain \u0000`}},
		{"ErrExtraLoneHighSurrogate", `[{"note":"\ud83d"}]`, herd.EINVALID, []string{`readings[0].note: unpaired UTF-16 surrogate \ud83d`}},
		{"ErrExtraHighThenNonLow", `{"note":"\ud83d\u0041"}`, herd.EINVALID, []string{`unpaired UTF-16 surrogate \ud83d`}},
		{"ErrExtraLoneLowSurrogate", `{"odd key!":"\uDE00"}`, herd.EINVALID, []string{`"odd key!": unpaired UTF-16 surrogate \ude00`}},
		{"ErrKeyNUL", `{"a\u0000":1}`, herd.EINVALID, []string{`key: text may not contain \u0000`}},
		{"ErrStatusNUL", `{"status":"o\u0000k"}`, herd.EINVALID, []string{`status: text may not contain \u0000`}},
		{"ErrLongTSShortened", `{"ts":"` + strings.Repeat("ä", 100) + `"}`, herd.EINVALID, []string{`ts: "` + strings.Repeat("ä", 32) + `…" is not an RFC 3339 time`}},
		{"ErrLongKeyShortened", `{"` + strings.Repeat("k", 100) + `":1,"` + strings.Repeat("k", 100) + `":2}`, herd.EINVALID, []string{`duplicate key "` + strings.Repeat("k", 64) + `…"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := herd.ParseTelemetry([]byte(tt.payload), telemetryArrival, 100)
			if tt.code != herd.ETOOLARGE {
				got, err = herd.ParseTelemetry([]byte(tt.payload), telemetryArrival, herd.DefaultTelemetryMaxBytes)
			}
			mustFail(t, err, tt.code, tt.parts...)
			if got != nil {
				t.Fatalf("refused payload returned %d readings", len(got))
			}
		})
	}
}

// encodeReadings writes readings back as a telemetry payload: a JSON array
// with ts in unix milliseconds, the fields the readings have, and their
// extras.
func encodeReadings(rs []herd.Reading) []byte {
	b := []byte{'['}
	for i, r := range rs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"ts":`...)
		b = strconv.AppendInt(b, r.TS, 10)
		for _, f := range []struct {
			bit  herd.ReadingFields
			name string
			v    any
		}{
			{herd.ReadingTemperature, "temperature", r.Temperature},
			{herd.ReadingHumidity, "humidity", r.Humidity},
			{herd.ReadingPressure, "pressure", r.Pressure},
			{herd.ReadingVoltage, "voltage", r.Voltage},
			{herd.ReadingCurrent, "current", r.Current},
			{herd.ReadingPower, "power", r.Power},
			{herd.ReadingBattery, "battery", r.Battery},
			{herd.ReadingRSSI, "rssi", r.RSSI},
			{herd.ReadingUptimeS, "uptime_s", r.UptimeS},
			{herd.ReadingErrorCount, "error_count", r.ErrorCount},
			{herd.ReadingStatus, "status", r.Status},
			{herd.ReadingFirmware, "firmware", r.Firmware},
		} {
			if r.Has&f.bit == 0 {
				continue
			}
			b = append(b, `,"`+f.name+`":`...)
			switch v := f.v.(type) {
			case float64:
				b = strconv.AppendFloat(b, v, 'g', -1, 64)
			case int64:
				b = strconv.AppendInt(b, v, 10)
			case string:
				s, _ := json.Marshal(v)
				b = append(b, s...)
			}
		}
		if len(r.Extra) > 2 {
			b = append(b, ',')
			b = append(b, r.Extra[1:len(r.Extra)-1]...)
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

var readingFieldNames = map[string]bool{
	"ts": true, "temperature": true, "humidity": true, "pressure": true, "voltage": true,
	"current": true, "power": true, "battery": true, "rssi": true, "uptime_s": true,
	"error_count": true, "status": true, "firmware": true,
}

// checkExtra fails unless extra is a compact JSON object whose keys are
// sorted, distinct and none of them a reading field.
func checkExtra(tb testing.TB, extra []byte) {
	tb.Helper()
	var compact bytes.Buffer
	if err := json.Compact(&compact, extra); err != nil || !bytes.Equal(compact.Bytes(), extra) {
		tb.Fatalf("extra %s is not compact JSON (%v)", extra, err)
	}
	dec := json.NewDecoder(bytes.NewReader(extra))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		tb.Fatalf("extra %s is not an object", extra)
	}
	prev := ""
	for i := 0; dec.More(); i++ {
		tok, err := dec.Token()
		if err != nil {
			tb.Fatalf("extra %s: %v", extra, err)
		}
		key := tok.(string)
		if readingFieldNames[key] {
			tb.Fatalf("extra %s holds the reading field %q", extra, key)
		} else if i > 0 && key <= prev {
			tb.Fatalf("extra %s: key %q after %q", extra, key, prev)
		}
		prev = key
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			tb.Fatalf("extra %s: %v", extra, err)
		}
	}
	if len(extra) == 2 {
		tb.Fatalf("extra is an empty object, want nil")
	}
}

func FuzzParseTelemetry(f *testing.F) {
	const maxBytes = herd.DefaultTelemetryMaxBytes
	all := herd.ReadingTemperature | herd.ReadingHumidity | herd.ReadingPressure |
		herd.ReadingVoltage | herd.ReadingCurrent | herd.ReadingPower | herd.ReadingBattery |
		herd.ReadingRSSI | herd.ReadingUptimeS | herd.ReadingErrorCount | herd.ReadingStatus | herd.ReadingFirmware
	f.Fuzz(func(t *testing.T, payload []byte) {
		got, err := herd.ParseTelemetry(payload, telemetryArrival, maxBytes)
		if err != nil {
			if code := herd.ErrorCode(err); code != herd.EINVALID && code != herd.ETOOLARGE {
				t.Fatalf("error code %s: %v", code, err)
			}
			if got != nil {
				t.Fatalf("refused payload returned %d readings", len(got))
			}
			return
		}
		if len(got) == 0 || len(got) > herd.MaxReadingsPerMessage {
			t.Fatalf("%d readings", len(got))
		}
		for i, r := range got {
			if r.TS < y2000MS || r.TS > arrivalMS+hourMS {
				t.Fatalf("readings[%d].ts %d outside the window", i, r.TS)
			}
			if r.Has&^all != 0 {
				t.Fatalf("readings[%d] has unknown field bits %b", i, r.Has)
			}
			if r.Has&herd.ReadingStatus != 0 && !herd.ValidStatus(r.Status) || r.Has&herd.ReadingStatus == 0 && r.Status != "" {
				t.Fatalf("readings[%d].status %q with mask %b", i, r.Status, r.Has)
			}
			if !herd.ValidText(r.Firmware) || len(r.Firmware) > 100 {
				t.Fatalf("readings[%d].firmware %q", i, r.Firmware)
			}
			for _, x := range []float64{r.Temperature, r.Humidity, r.Pressure, r.Voltage, r.Current, r.Power, r.Battery} {
				if math.IsNaN(x) || math.IsInf(x, 0) {
					t.Fatalf("readings[%d]: %v", i, x)
				}
			}
			if r.Extra != nil {
				checkExtra(t, r.Extra)
			}
		}
		// What was accepted reads back the same from its canonical form.
		again, err := herd.ParseTelemetry(encodeReadings(got), telemetryArrival, 4*maxBytes)
		if err != nil {
			t.Fatalf("accepted %q, refused its canonical form %s: %v", payload, encodeReadings(got), err)
		}
		if !reflect.DeepEqual(again, got) {
			t.Fatalf("%q: got %+v, canonical form %s reads %+v", payload, got, encodeReadings(got), again)
		}
	})
}

func BenchmarkParseTelemetry(b *testing.B) {
	arrival := telemetryArrival
	for _, bm := range []struct {
		name    string
		payload string
	}{
		// A typical message: a time and six fields, about 200 bytes.
		{"Object", `{"ts": "2025-06-01T11:59:58.123Z", "temperature": 21.57, "humidity": 48.25, "pressure": 1013.25, "voltage": 3.301, "battery": 87.5, "rssi": -67, "status": "ok", "firmware": "2.3.1"}`},
		{"ObjectUnixMillis", `{"ts": 1748779198123, "temperature": 21.57, "humidity": 48.25, "pressure": 1013.25, "voltage": 3.301, "battery": 87.5, "rssi": -67, "status": "ok"}`},
		{"ObjectExtra", `{"ts": 1748779198123, "temperature": 21.57, "humidity": 48.25, "rssi": -67, "status": "ok", "co2_ppm": 612, "door": "closed"}`},
		{"Array10", "[" + strings.Repeat(`{"ts": 1748779198123, "temperature": 21.57, "humidity": 48.25, "rssi": -67},`, 9) +
			`{"ts": 1748779198123, "temperature": 21.57, "humidity": 48.25, "rssi": -67}]`},
	} {
		b.Run(bm.name, func(b *testing.B) {
			payload := []byte(bm.payload)
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := herd.ParseTelemetry(payload, arrival, herd.DefaultTelemetryMaxBytes); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestParseDeviceEvent(t *testing.T) {
	for _, tt := range []struct {
		name, payload, want string
		code                string
	}{
		{"OKObject", ` { "kind" : "door", "open": true, "n": [1, 2] } `, `{"kind":"door","open":true,"n":[1,2]}`, ""},
		{"OKNested", `{"a":{"b":"x y"}}`, `{"a":{"b":"x y"}}`, ""},
		{"OKEmpty", `{}`, `{}`, ""},
		{"ErrArray", `[{"kind":"door"}]`, "", herd.EINVALID},
		{"ErrString", `"door"`, "", herd.EINVALID},
		{"ErrSyntax", `{"kind":`, "", herd.EINVALID},
		{"ErrNUL", `{"kind":"a\u0000b"}`, "", herd.EINVALID},
		{"ErrNULInKey", `{"a\u0000":1}`, "", herd.EINVALID},
		{"ErrSurrogate", `{"kind":"\ud800"}`, "", herd.EINVALID},
		{"ErrUTF8", "{\"kind\":\"\xff\"}", "", herd.EINVALID},
		{"ErrTooLarge", `{"kind":"` + strings.Repeat("x", 100) + `"}`, "", herd.ETOOLARGE},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := herd.ParseDeviceEvent([]byte(tt.payload), 64)
			if tt.code != "" {
				if herd.ErrorCode(err) != tt.code || got != nil {
					t.Fatalf("got %q, %v; want %s", got, err, tt.code)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func FuzzParseDeviceEvent(f *testing.F) {
	for _, s := range []string{`{"kind":"door"}`, ` {"a":[1,{"b":null}]} `, `[1]`, `{"a":"\u00e9"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		got, err := herd.ParseDeviceEvent(payload, herd.DefaultTelemetryMaxBytes)
		if err != nil {
			if code := herd.ErrorCode(err); code != herd.EINVALID && code != herd.ETOOLARGE {
				t.Fatalf("error code %s: %v", code, err)
			}
			return
		}
		// What is accepted is one JSON object that PostgreSQL's jsonb and
		// SQLite both take, and parsing it again changes nothing.
		var m map[string]any
		if err := json.Unmarshal(got, &m); err != nil {
			t.Fatalf("accepted %q, which is not a JSON object: %v", got, err)
		}
		if hasNUL(m) {
			t.Fatalf("accepted a NUL: %q", got)
		}
		again, err := herd.ParseDeviceEvent(got, herd.DefaultTelemetryMaxBytes)
		if err != nil || !bytes.Equal(again, got) {
			t.Fatalf("parsing %q again: %q, %v", got, again, err)
		}
	})
}

// hasNUL reports whether a decoded JSON value holds a NUL in any string.
func hasNUL(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.ContainsRune(v, 0)
	case []any:
		for _, e := range v {
			if hasNUL(e) {
				return true
			}
		}
	case map[string]any:
		for k, e := range v {
			if strings.ContainsRune(k, 0) || hasNUL(e) {
				return true
			}
		}
	}
	return false
}

func FuzzParseCommandAck(f *testing.F) {
	for _, s := range []string{`{"id":"42","status":"ok","result":{"uptime_s":3}}`, `{"id":7,"status":"error","error":"busy"}`, `{"id":"1","status":"ok","result":null}`, `{"id":"x","status":"ok"}`, `{"id":"1","status":"ok","error":"\u0000"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		a, err := herd.ParseCommandAck(payload, herd.DefaultTelemetryMaxBytes)
		if err != nil {
			if code := herd.ErrorCode(err); code != herd.EINVALID && code != herd.ETOOLARGE {
				t.Fatalf("error code %s: %v", code, err)
			}
			return
		}
		// What is accepted names a command and goes into any store's text.
		if a.CommandID <= 0 {
			t.Fatalf("accepted command id %d", a.CommandID)
		}
		if strings.ContainsRune(a.Error, 0) || !utf8.ValidString(a.Error) || len(a.Error) > 1024 {
			t.Fatalf("accepted error %q", a.Error)
		}
		if a.Result != nil && (!json.Valid(a.Result) || !utf8.Valid(a.Result) || bytes.Contains(a.Result, []byte(`\u0000`))) {
			t.Fatalf("accepted result %q", a.Result)
		}
	})
}
