package mqttgw

import "testing"

// TestTopicRules is the table of what a device may publish (and leave as a
// will) and subscribe to: every form of topic, its own and not.
func TestTopicRules(t *testing.T) {
	const key, other = "dev-1", "dev-2"
	for _, tt := range []struct {
		topic     string
		publish   string // the kind it is published as; "" refused
		subscribe bool
	}{
		// Its own topics.
		{"devices/dev-1/telemetry", topicTelemetry, false},
		{"devices/dev-1/events", topicEvents, false},
		{"devices/dev-1/commands/ack", topicAck, false},
		{"devices/dev-1/commands", "", true},
		{"devices/dev-1/config", "", true},
		{"devices/dev-1/config/ack", topicConfigAck, false},
		{"devices/dev-1/ota", "", true},
		{"devices/dev-1/ota/progress", topicProgress, false},
		// Another device's, the same eight.
		{"devices/dev-2/telemetry", "", false},
		{"devices/dev-2/events", "", false},
		{"devices/dev-2/commands/ack", "", false},
		{"devices/dev-2/commands", "", false},
		{"devices/dev-2/config", "", false},
		{"devices/dev-2/config/ack", "", false},
		{"devices/dev-2/ota", "", false},
		{"devices/dev-2/ota/progress", "", false},
		// A key that only starts or ends like its own.
		{"devices/dev-10/telemetry", "", false},
		{"devices/xdev-1/commands", "", false},
		// Wildcards match nothing, anywhere.
		{"devices/+/commands", "", false},
		{"devices/+/telemetry", "", false},
		{"devices/dev-1/+", "", false},
		{"devices/dev-1/#", "", false},
		{"devices/dev-1/commands/#", "", false},
		{"devices/dev-1/commands/+", "", false},
		{"devices/#", "", false},
		{"#", "", false},
		{"+/dev-1/commands", "", false},
		// $SYS and shared subscriptions.
		{"$SYS/#", "", false},
		{"$SYS/broker/clients/connected", "", false},
		{"$share/g/devices/dev-1/commands", "", false},
		// Empty levels and trailing slashes make other topics.
		{"", "", false},
		{"devices", "", false},
		{"devices/", "", false},
		{"devices//telemetry", "", false},
		{"devices/dev-1", "", false},
		{"devices/dev-1/", "", false},
		{"devices/dev-1//telemetry", "", false},
		{"devices/dev-1/telemetry/", "", false},
		{"devices/dev-1/commands/", "", false},
		{"devices/dev-1/commands//ack", "", false},
		{"/devices/dev-1/telemetry", "", false},
		{"/devices/dev-1/commands", "", false},
		// Case: topics are case-sensitive.
		{"Devices/dev-1/telemetry", "", false},
		{"devices/DEV-1/telemetry", "", false},
		{"devices/dev-1/Telemetry", "", false},
		{"devices/dev-1/COMMANDS", "", false},
		{"devices/dev-1/Commands/Ack", "", false},
		// Longer than its own.
		{"devices/dev-1/telemetry/extra", "", false},
		{"devices/dev-1/commands/ack/extra", "", false},
		{"devices/dev-1/config/x", "", false},
		{"devices/dev-1/config/ack/x", "", false},
		{"devices/dev-1/ota/x", "", false},
		{"devices/dev-1/ota/progress/", "", false},
		{"devices/dev-1/config/#", "", false},
		{"devices/dev-1/ota/+", "", false},
		{"devices/dev-1/Config/Ack", "", false},
	} {
		kind, ok := mayPublish(key, tt.topic)
		if (tt.publish != "") != ok || (ok && kind != tt.publish) {
			t.Errorf("mayPublish(%q, %q) = %q, %v; want %q", key, tt.topic, kind, ok, tt.publish)
		}
		if got := maySubscribe(key, tt.topic); got != tt.subscribe {
			t.Errorf("maySubscribe(%q, %q) = %v, want %v", key, tt.topic, got, tt.subscribe)
		}
	}
	// The other device's own topics are its, not the first one's.
	if _, ok := mayPublish(other, "devices/dev-2/telemetry"); !ok || !maySubscribe(other, "devices/dev-2/commands") {
		t.Error("dev-2 may not use its own topics")
	}
}
