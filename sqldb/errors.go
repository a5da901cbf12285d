package sqldb

import (
	"errors"
	"fmt"

	"github.com/herd-iot/herd"
)

// wrapOp prefixes an error of the store with the exported method that
// failed ("sqldb.MoveDevice: begin: …"), so a log line says which
// operation it was; the cause stays in the chain for errors.Is and
// errors.As. An application error (*herd.Error) is the caller's answer,
// not the store's failure, and goes on as it is, so its code and message
// reach the client unchanged. Every exported method that can fail defers
// it on its named error result.
func wrapOp(op string, err *error) {
	if *err == nil {
		return
	}
	var he *herd.Error
	if errors.As(*err, &he) {
		return
	}
	*err = fmt.Errorf("%s: %w", op, *err)
}
