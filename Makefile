# Two commands set herd up: `make run` and `make test`. CI runs `make test`
# (through .ci/run, which first makes sure PostgreSQL is up).

# staticcheck v0.8.2 is release 2026.2.2, which understands Go 1.26; older
# releases can fail to type-check code built with a newer Go than they know.
STATICCHECK_VERSION ?= v0.8.2

.PHONY: run test bench lint

# Runs herd with embedded defaults: SQLite in ./herd-data, REST API on :8080.
run:
	go run ./cmd/herd serve

# Runs every test with the race detector; store tests also run on PostgreSQL
# when HERD_TEST_POSTGRES_URL is set (see DEVELOPERS.md). The timeout is a
# package's: sqldb takes about 6 minutes alone under the race detector on two
# cores, and twice that beside the other packages; the default 10 would kill
# a run that is only slow.
test:
	go test -race -count=1 -timeout 30m ./...

bench:
	go run ./cmd/herd bench all

lint:
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then echo "gofmt -l reports:"; echo "$$unformatted"; exit 1; fi
	go vet ./...
	go run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
