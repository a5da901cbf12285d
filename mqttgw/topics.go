package mqttgw

import (
	"strings"
)

// The topic rules. A device has eight topics, all under devices/{its key}/:
// it publishes on telemetry, events, commands/ack, config/ack and
// ota/progress (and may leave a will on them), and subscribes to commands,
// config and ota. Nothing else is its,
// and the rules are exact: topics are case-sensitive as MQTT says, a
// filter with a wildcard matches no topic (it would name other devices'
// or more than the device's), $SYS and shared subscriptions are refused
// like any other topic outside devices/{key}/, and an empty level or a
// trailing slash makes another topic, not the same one.

// topic kinds a device may use.
const (
	topicTelemetry = "telemetry"
	topicEvents    = "events"
	topicAck       = "commands/ack"
	topicCommands  = "commands"
	topicConfig    = "config"
	topicConfigAck = "config/ack"
	topicOTA       = "ota"
	topicProgress  = "ota/progress"
)

// deviceTopic splits devices/{key}/{rest}; ok is false for anything else.
func deviceTopic(topic string) (key, rest string, ok bool) {
	after, found := strings.CutPrefix(topic, "devices/")
	if !found {
		return "", "", false
	}
	key, rest, found = strings.Cut(after, "/")
	return key, rest, found && key != ""
}

// mayPublish says whether a device may publish on topic, and its kind.
// A will is held to the same rule.
func mayPublish(deviceKey, topic string) (kind string, ok bool) {
	key, rest, ok := deviceTopic(topic)
	return rest, ok && key == deviceKey && (rest == topicTelemetry || rest == topicEvents || rest == topicAck || rest == topicConfigAck || rest == topicProgress)
}

// maySubscribe says whether a device may subscribe to filter: its
// commands, its config or its firmware updates, named exactly.
func maySubscribe(deviceKey, filter string) bool {
	key, rest, ok := deviceTopic(filter)
	return ok && key == deviceKey && (rest == topicCommands || rest == topicConfig || rest == topicOTA)
}
