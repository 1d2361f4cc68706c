# tokenbroker: every developer and CI command. Tool versions are pinned here;
# `make tools` installs them into bin/tools with `go install`, from the Go module proxy.

GO            ?= go
SHELL         := /bin/bash
TOOLS         := $(CURDIR)/bin/tools
BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
STATICCHECK_VERSION        := v0.8.2
GRPCURL_VERSION            := v1.9.4
GHZ_VERSION                := v0.121.0
# protoc-gen-go is built at the google.golang.org/protobuf version go.mod requires.

BUF := $(TOOLS)/buf
export PATH := $(TOOLS):$(PATH)

.PHONY: all run build test test-short test-interop bench lint generate tools check-generated breaking fuzz soak load bench-cold clean

all: lint test build

## run: start the broker on the embedded dev default (emulator upstream, throwaway key) and print how to call it
run: build
	bin/tokenbroker dev

## build: the one binary, bin/tokenbroker
build:
	$(GO) build -trimpath -o bin/tokenbroker ./cmd/tokenbroker

## test: every test, with the race detector (fuzz targets run their committed seeds)
test:
	$(GO) test -race -count=1 ./...

## test-interop: the Python and Node example clients (examples/) against the built broker: plaintext, TLS with a
## bearer key and mTLS, GetAccessToken and WatchAccessToken. A language not installed is skipped, saying so;
## TOKENBROKER_REQUIRE_INTEROP=1 makes that a failure.
test-interop: build
	TOKENBROKER_BINARY=$(CURDIR)/bin/tokenbroker $(GO) test -count=1 -v -run '^TestClients' ./test/interop/

## bench: the benchmarks, in a format benchstat reads. BENCH_COUNT passes over the whole suite rather than
## -count, so that each benchmark and its baseline (e.g. GetAccessTokenHitTCP and BareGRPCTCP) alternate
BENCH_COUNT ?= 5
bench:
	set -o pipefail; for i in $$(seq $(BENCH_COUNT)); do $(GO) test -run='^$$' -bench=. -benchmem -count=1 ./... || exit 1; done | tee bench.out

## bench-cold: 10,000 distinct cold keys at once through the broker (Pismo exchanger, production's upstream
## guard), against a stub upstream and against the emulator, alternated with signing 10,000 assertions alone on
## every core; prints the wall times and their ratios for COLD_ROUNDS rounds (not part of make test)
COLD_ROUNDS ?= 3
bench-cold:
	$(GO) test -count=1 -run='^TestCold10k$$' -v ./bench/measure/ -args -cold -cold.rounds=$(COLD_ROUNDS)

## load: bin/tokenbroker (warm cache, bearer auth) and bin/bareserver (bare gRPC, same API and token size) driven
## in turn by ghz over loopback, alternated RUNS times each for DURATION at CONCURRENCY; prints requests/s, p50
## and p99 of each run, the ratios broker ÷ bare and the medians; LOG_CALLS=all runs the broker with
## --log-calls all, a line per call (not part of make test)
DURATION    ?= 10s
CONCURRENCY ?= 16
RUNS        ?= 3
LOG_CALLS   ?= failures
load: build $(TOOLS)/ghz
	$(GO) build -trimpath -o bin/bareserver ./bench/bareserver
	$(GO) run ./bench/load -broker bin/tokenbroker -bare bin/bareserver -ghz $(TOOLS)/ghz \
		-duration $(DURATION) -concurrency $(CONCURRENCY) -runs $(RUNS) -log-calls $(LOG_CALLS)

## load-replicas: REPLICAS `tokenbroker serve` processes on one config sharing a fresh redis-server (cache.shared),
## then the same without cache.shared (independent replicas), alternated REPLICAS_RUNS times, fresh processes each
## time; the emulator (`tokenbroker emulate`) issues tokens of REPLICAS_LIFETIME. Each scenario warms every replica
## with REPLICAS_KEYS uids, then drives all the replicas at once, one ghz process each (CONCURRENCY split among
## them), for DURATION (60s unless given), the uids round-robin. Prints requests/s, p50 and p99 across the replicas,
## the upstream exchanges (summed from their /metrics) per key per token lifetime and per refresh cycle, and the
## ratios shared ÷ independent (not part of make test). Needs redis-server. The Redis timeout is 250ms here, not the
## default 50ms: ghz, three brokers and Redis share two cores, and a starved Redis would count as an outage
REPLICAS               ?= 3
REPLICAS_KEYS          ?= 100
REPLICAS_LIFETIME      ?= 20s
REPLICAS_SKEW          ?= 1s
REPLICAS_RUNS          ?= 1
REPLICAS_REDIS_TIMEOUT ?= 250ms
REPLICAS_DURATION := $(if $(filter command line environment,$(origin DURATION)),$(DURATION),60s)
.PHONY: load-replicas
load-replicas: build $(TOOLS)/ghz
	$(GO) run ./bench/load -replicas $(REPLICAS) -broker bin/tokenbroker -ghz $(TOOLS)/ghz \
		-duration $(REPLICAS_DURATION) -concurrency $(CONCURRENCY) -runs $(REPLICAS_RUNS) -keys $(REPLICAS_KEYS) \
		-lifetime $(REPLICAS_LIFETIME) -skew $(REPLICAS_SKEW) -redis-timeout $(REPLICAS_REDIS_TIMEOUT)

## bench-shared: a token another replica stored in a real redis-server, served to a replica that misses its own cache
## (BenchmarkSharedRemoteHit), against one served from the replica's own cache (BenchmarkSharedLocalHit), -benchmem,
## BENCH_COUNT passes so that the two alternate; benchstat reads bench-shared.out. Skipped without redis-server
## (TOKENBROKER_REQUIRE_REDIS=1 makes that a failure); not part of make test
.PHONY: bench-shared
bench-shared:
	set -o pipefail; for i in $$(seq $(BENCH_COUNT)); do $(GO) test -run='^$$' -bench='^BenchmarkShared(RemoteHit|LocalHit)$$' \
		-benchmem -count=1 ./bench/measure/ || exit 1; done | tee bench-shared.out

## fuzz: run each fuzz target for FUZZTIME (not part of make test)
FUZZTIME ?= 60s
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) ./keystore/
	$(GO) test -run='^$$' -fuzz='^FuzzParseWithOptions$$' -fuzztime=$(FUZZTIME) ./keystore/
	$(GO) test -run='^$$' -fuzz='^FuzzParseRef$$' -fuzztime=$(FUZZTIME) ./keystore/pkcs11/
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) ./internal/config/
	$(GO) test -run='^$$' -fuzz='^FuzzTokenRequest$$' -fuzztime=$(FUZZTIME) ./internal/emulator/
	$(GO) test -run='^$$' -fuzz='^FuzzParseTokenResponse$$' -fuzztime=$(FUZZTIME) ./internal/upstream/
	$(GO) test -run='^$$' -fuzz='^FuzzParseDiscovery$$' -fuzztime=$(FUZZTIME) ./internal/upstream/
	$(GO) test -run='^$$' -fuzz='^FuzzValidateRequest$$' -fuzztime=$(FUZZTIME) ./server/
	$(GO) test -run='^$$' -fuzz='^FuzzParseRetryAfter$$' -fuzztime=$(FUZZTIME) ./internal/upstream/
	$(GO) test -run='^$$' -fuzz='^FuzzOpen$$' -fuzztime=$(FUZZTIME) ./internal/seal/
	$(GO) test -run='^$$' -fuzz='^FuzzVerify$$' -fuzztime=$(FUZZTIME) ./internal/audit/
	$(GO) test -run='^$$' -fuzz='^FuzzDecode$$' -fuzztime=$(FUZZTIME) ./internal/sharedtoken/

## soak: load plus injected upstream faults against the real server for SOAK_DURATION (not part of make test)
SOAK_DURATION ?= 5m
soak: build
	$(GO) run ./test/soak -duration $(SOAK_DURATION) -binary bin/tokenbroker

## lint: gofmt, go vet, staticcheck, buf lint and buf format
lint: tools
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(TOOLS)/staticcheck ./...
	$(BUF) lint
	$(BUF) format -d --exit-code

## generate: regenerate gen/ from proto/ with the pinned local plugins
generate: tools
	rm -rf gen
	$(BUF) generate

## check-generated: fail if gen/ is not what make generate writes
check-generated: generate
	git diff --exit-code -- gen
	@test -z "$$(git status --porcelain -- gen)" || { git status --porcelain -- gen; echo "gen/ has untracked files: commit them"; exit 1; }

## breaking: buf breaking against the previous commit (skipped when it has no proto/)
breaking: tools
	@if git cat-file -e HEAD~1:proto 2>/dev/null; then \
		$(BUF) breaking --against '.git#ref=HEAD~1'; \
	else echo "breaking: HEAD~1 has no proto/ (first commit or shallow clone): nothing to compare"; fi

## tools: install the pinned tools into bin/tools
tools: $(TOOLS)/buf $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc $(TOOLS)/staticcheck $(TOOLS)/grpcurl

$(TOOLS)/buf:
	GOBIN=$(TOOLS) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(TOOLS)/protoc-gen-go: go.mod
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go
$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
$(TOOLS)/grpcurl:
	GOBIN=$(TOOLS) $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
$(TOOLS)/ghz:
	GOBIN=$(TOOLS) $(GO) install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)

clean:
	rm -rf bin bench.out
