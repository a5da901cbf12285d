package httpapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/herd-iot/herd"
)

// returning adapts a handler that returns its error instead of writing
// it: the one place such a handler's error is rendered, so that none can
// forget the return after an Error. A handler that returns an error must
// not have written its answer. (The older handlers still call Error
// themselves; new ones are written this way.)
func returning(h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			Error(w, r, err)
		}
	}
}

// viewByID answers GET of one object by the id in the path value named
// key (default "id"), as find returns it.
func viewByID[T any](w http.ResponseWriter, r *http.Request, find func(context.Context, int64) (T, error), key ...string) error {
	name := "id"
	if len(key) > 0 {
		name = key[0]
	}
	id, err := pathID(r, name)
	if err != nil {
		return err
	}
	v, err := find(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// keysetPage reads ?after= and ?limit= (1 to 1,000, default 100) of a
// list paged by id.
func keysetPage(r *http.Request) (after int64, limit int, err error) {
	if after, err = queryAfter(r); err != nil {
		return 0, 0, err
	}
	limit, err = queryLimit(r, 100)
	return after, limit, err
}

// keysetPageBefore is keysetPage for a list paged newest first, whose
// cursor is ?before=: the last id of the page before, under which the
// next page's ids lie.
func keysetPageBefore(r *http.Request) (before int64, limit int, err error) {
	if before, err = queryCursor(r, "before"); err != nil {
		return 0, 0, err
	}
	limit, err = queryLimit(r, 100)
	return before, limit, err
}

// queryCursor reads the keyset cursor ?name=N: the next of the page
// before, 0 (or absent) for the first page.
func queryCursor(r *http.Request, name string) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, herd.Errorf(herd.EINVALIDCURSOR, "%s %q is not the next of a page before", name, v)
	}
	return n, nil
}
