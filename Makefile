# mtunnel: `make demo` runs the whole tunnel in one process; `make test`
# runs every test (unit, integration, the built binary) with -race;
# `make fuzz` runs each fuzz target for a while.

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN      := bin/mtunnel
LDFLAGS  := -s -w -X main.version=$(VERSION)
STATICCHECK_VERSION := v0.8.2
FUZZTIME ?= 10s

.PHONY: all build test fuzz demo lint fmt clean bench

all: build

# One static binary: no cgo, no libc dependency.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) .

test:
	$(GO) test -race -count=1 -timeout 20m ./...

# Each fuzz target in turn for $(FUZZTIME) (CI: 30s), without -race, which
# would slow it several times over. `make test` already replays the seeds
# and every crasher saved in testdata/fuzz/. A new input is minimised for
# at most 5s: the default, 60s, eats a short run (FuzzConfig runs the CLI
# per input).
FUZZ = $(GO) test -run '^$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s -fuzz
fuzz:
	$(FUZZ) '^FuzzReadRequest$$' ./tunnel
	$(FUZZ) '^FuzzReadResponse$$' ./tunnel
	$(FUZZ) '^FuzzRule$$' ./tunnel
	$(FUZZ) '^FuzzConfig$$' .

demo: build
	./$(BIN) demo

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin

# Side-by-side measurements of direct TCP, mtunnel (the built binary) and
# stunnel4 in mutual TLS, interleaved over rounds; see bench/main.go.
# Extra flags: make bench BENCHFLAGS="-quick" (or -rounds, -idle, ...).
bench: build
	$(GO) run ./bench -mtunnel $(BIN) $(BENCHFLAGS)
