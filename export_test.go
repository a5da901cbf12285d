package herd

// SignDeviceCursor signs a hand-made device cursor payload (base64 JSON) as
// EncodeCursor does, so that tests can reach the checks made after the
// signature.
func SignDeviceCursor(k CursorKey, payload string) string { return k.sign(deviceCursorKind, payload) }
