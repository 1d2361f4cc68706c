package server_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/server"
)

// finishedCalls returns the "finished call" lines logged so far.
func finishedCalls(t *testing.T, h *harness) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(h.logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["msg"] == "finished call" {
			lines = append(lines, m)
		}
	}
	return lines
}

// Each call gets one line with who asked for what and how it ended; tokens
// and keys appear by fingerprint only.
func TestCallLogLine(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	resp, err := h.get(context.Background(), keyFull, okReq())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.get(context.Background(), "tbk_nobody", okReq()); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("unknown key: %v", err)
	}
	lines := finishedCalls(t, h)
	if len(lines) != 2 {
		t.Fatalf("%d finished-call lines, want 2", len(lines))
	}
	ok, refused := lines[0], lines[1]
	for k, want := range map[string]any{
		"level": "INFO", "grpc.service": "tokenbroker.v1.TokenBrokerService", "grpc.method": "GetAccessToken",
		"grpc.method_type": "unary", "grpc.code": "OK", "tenant": okReq().GetTenant(), "cache": "miss", "account": "none",
	} {
		if ok[k] != want {
			t.Errorf("success line %s = %v, want %v", k, ok[k], want)
		}
	}
	for _, k := range []string{"caller", "peer.address", "grpc.time_ms", "token_fp", "groups"} {
		if ok[k] == nil || ok[k] == "" {
			t.Errorf("success line has no %s: %v", k, ok)
		}
	}
	if refused["grpc.code"] != "Unauthenticated" || refused["auth_failure"] == nil || refused["key_fp"] == nil || refused["caller"] != nil {
		t.Errorf("refusal line = %v, want the code, the reason and the key's fingerprint, no caller", refused)
	}
	if strings.Contains(h.logs.String(), resp.GetAccessToken()) {
		t.Error("the log holds the token")
	}
	h.checkLogs()
}

// With CallLogFailures, successful calls are not logged; failures are.
func TestCallLogFailuresOnly(t *testing.T) {
	h := newHarness(t, harnessOptions{callLog: server.CallLogFailures})
	for range 3 {
		if _, err := h.get(context.Background(), keyFull, okReq()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.get(context.Background(), "tbk_nobody", okReq()); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("unknown key: %v", err)
	}
	lines := finishedCalls(t, h)
	if len(lines) != 1 || lines[0]["grpc.code"] != "Unauthenticated" {
		t.Errorf("lines = %v, want only the refusal", lines)
	}
}

func TestParseCallLog(t *testing.T) {
	for in, want := range map[string]server.CallLog{"all": server.CallLogAll, "failures": server.CallLogFailures} {
		if got, err := server.ParseCallLog(in); err != nil || got != want {
			t.Errorf("ParseCallLog(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := server.ParseCallLog("some"); err == nil {
		t.Error("ParseCallLog(some) accepted")
	}
}
