package main

import "github.com/herd-iot/herd/httpapi"

// testServerHook, when set, sees the API server before it opens. Only the
// test binary sets it, when it runs herd as a child process (see
// TestMain), to install failpoints; herd itself never does.
var testServerHook func(*httpapi.Server)
