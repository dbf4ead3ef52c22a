# mailrelay — build, test and developer tooling. GNU make.
#
#   make build   build bin/mailrelay
#   make run     run it with an embedded JetStream server and the console backend
#   make test    install the e2e tools, build, vet, run every test with -race
#   make demo    with `make run` going: opt a user in and publish a sample event
#   make fuzz    run each Fuzz* target for FUZZTIME (default 50000 inputs)
#   make bench   run the benchmarks
#   make lint    gofmt check and go vet
#   make tools   install the pinned e2e tools into ./bin
#   make clean   remove bin/mailrelay; clean-tools removes the tools too

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build
.DELETE_ON_ERROR:

GO       ?= go
BIN      := $(CURDIR)/bin
# A count, not a duration: Go 1.26's fuzz coordinator can fail a timed run
# with "context deadline exceeded" when the time runs out (golang/go#75804).
FUZZTIME ?= 50000x

# Pinned tool versions. After changing one, run `make clean-tools tools`:
# the tool targets are files and are not rebuilt while they exist.
MAILPIT_VERSION     := v1.33.1
NATSCLI_VERSION     := v0.5.0
NATS_SERVER_VERSION := v2.15.2

TOOLS := $(BIN)/mailpit $(BIN)/nats $(BIN)/nats-server

.PHONY: build run demo test tools fuzz bench lint clean clean-tools

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/mailrelay ./cmd/mailrelay

run: build
	EMAIL_BACKEND=console MAILRELAY_LOG_FORMAT=console bin/mailrelay serve --embedded

# Publishes examples/task.comment.json, dated now (so it is not stale), to the
# relay that `make run` started; the mail appears on that terminal.
demo: build
	bin/mailrelay prefs set u42 all=on
	sed -E 's/"occurred_at": "[^"]+"/"occurred_at": "'"$$(date -u +%FT%TZ)"'"/; s/^  "id": "[^"]+"/  "id": "demo-'"$$(date +%s%N)"'"/' examples/task.comment.json | bin/mailrelay publish

# The e2e tests find the tools through MAILRELAY_E2E_BIN_DIR; with CI=true a
# missing tool fails them instead of skipping.
test: tools build
	$(GO) vet ./...
	@{ python3 -c 'import jsonschema' || /usr/bin/python3 -c 'import jsonschema'; } 2>/dev/null || [ "$$(id -u)" != 0 ] || { apt-get update -qq && apt-get install -y -qq python3-jsonschema; }
	@{ python3 -c 'import dkim, nacl' || /usr/bin/python3 -c 'import dkim, nacl'; } 2>/dev/null || [ "$$(id -u)" != 0 ] || { apt-get update -qq && apt-get install -y -qq python3-dkim python3-nacl; }
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || { apt-get update -qq && apt-get install -y -qq chromium; }
	@# Postfix for TestPostfix (a local instance the test starts itself); the system service stays unconfigured.
	@command -v postfix >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || { echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null 2>&1 || echo "postfix could not be installed: TestPostfix skips"; }
	MAILRELAY_E2E_BIN_DIR=$(BIN) $(GO) test -race -count=1 -timeout 60m ./...

tools: $(TOOLS)

$(BIN)/mailpit:
	GOBIN=$(BIN) $(GO) install github.com/axllent/mailpit@$(MAILPIT_VERSION)

$(BIN)/nats:
	GOBIN=$(BIN) $(GO) install github.com/nats-io/natscli/nats@$(NATSCLI_VERSION)

$(BIN)/nats-server:
	GOBIN=$(BIN) $(GO) install github.com/nats-io/nats-server/v2@$(NATS_SERVER_VERSION)

# Go fuzzes one target of one package at a time: tools/fuzz.sh finds them all.
# FUZZPKGS narrows it down, e.g. make fuzz FUZZPKGS=./compose FUZZTIME=2m
FUZZPKGS ?= ./...
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) tools/fuzz.sh $(FUZZPKGS)

# End-to-end benchmark (bench/main.go): a real nats-server and a discarding
# SMTP sink on 127.0.0.1, the go-mail limit, drain, latency, memory and
# remote-relay figures, then the Go micro-benchmarks; prints a table and
# writes bench/RESULTS.md. About 6 minutes. Not part of make test.
bench: $(BIN)/nats-server
	$(GO) run ./bench -nats-server $(BIN)/nats-server -out bench/RESULTS.md

lint:
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -f bin/mailrelay

clean-tools:
	rm -f $(TOOLS)
