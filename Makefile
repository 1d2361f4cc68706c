# tokenbroker: every developer and CI command. Tool versions are pinned here;
# `make tools` installs them into bin/tools with `go install`, from the Go module proxy.

GO            ?= go
TOOLS         := $(CURDIR)/bin/tools
BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
STATICCHECK_VERSION        := v0.8.2
GRPCURL_VERSION            := v1.9.4
# protoc-gen-go is built at the google.golang.org/protobuf version go.mod requires.

BUF := $(TOOLS)/buf
export PATH := $(TOOLS):$(PATH)

.PHONY: all run build test test-short test-interop bench lint generate tools check-generated breaking fuzz soak clean

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

## bench: the benchmarks, in a format benchstat reads
bench:
	$(GO) test -run='^$$' -bench=. -benchmem -count=5 ./... | tee bench.out

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

clean:
	rm -rf bin bench.out
