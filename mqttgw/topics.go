package mqttgw

import (
	"strings"
)

// topic kinds a device may use.
const (
	topicTelemetry = "telemetry"
	topicEvents    = "events"
	topicAck       = "commands/ack"
	topicCommands  = "commands"
	topicConfig    = "config"
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
func mayPublish(deviceKey, topic string) (kind string, ok bool) {
	key, rest, ok := deviceTopic(topic)
	return rest, ok && key == deviceKey && (rest == topicTelemetry || rest == topicEvents || rest == topicAck)
}
