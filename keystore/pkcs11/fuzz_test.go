package pkcs11

import (
	"maps"
	"strings"
	"testing"

	"github.com/stefanberger/go-pkcs11uri"
)

// FuzzParseRef checks that ParseRef never panics, that its errors carry the
// pkcs11: prefix and do not depend on a pin-value's value (so cannot repeat
// it), and that what it accepts is an RFC 7512 URI that
// github.com/stefanberger/go-pkcs11uri reads the same way, that parses again
// to the same Ref, and whose canonical form (as messages show it) has the
// same attributes.
//
// Besides the seeds added here, testdata/fuzz/FuzzParseRef holds seeds
// written by hand in the go test fuzz v1 format.
func FuzzParseRef(f *testing.F) {
	f.Add("pkcs11:token=broker;object=tenant-a", "/usr/lib/softhsm/libsofthsm2.so", "/run/pin")
	f.Add("pkcs11:id=%01%02;type=private?module-path=/m.so&pin-source=file:///p", "", "")
	f.Add("pkcs11:object=k?pin-value=1234", "/m.so", "/p")
	f.Add("pkcs11:slot-id=42;library-version=2.6;object=a%3Bb;x-v=1?x-q=/a?b|c", "/m.so", "/p")
	f.Add("pkcs11:object=k;type=public", "/m.so", "/p")
	f.Fuzz(func(t *testing.T, uri, module, pinFile string) {
		ref := Ref{URI: uri, Module: module, PINFile: pinFile}
		got, err := ParseRef(ref)
		if masked, ok := maskPINValues(uri); ok {
			if err == nil {
				t.Fatalf("ParseRef(%q) accepted a pin-value", uri)
			}
			_, err2 := ParseRef(Ref{URI: masked, Module: module, PINFile: pinFile})
			if err2 == nil || err2.Error() != err.Error() {
				t.Fatalf("the error depends on the pin-value's value:\n%q: %v\n%q: %v", uri, err, masked, err2)
			}
		}
		if err != nil {
			if !strings.HasPrefix(err.Error(), "pkcs11: ") {
				t.Fatalf("err = %v, want the pkcs11: prefix", err)
			}
			if got != (Ref{}) {
				t.Fatalf("ParseRef returned %+v with its error", got)
			}
			return
		}
		if got.URI != uri || got.Module == "" || got.PINFile == "" {
			t.Fatalf("ParseRef(%+v) = %+v", ref, got)
		}
		again, err := ParseRef(got)
		if err != nil || again != got {
			t.Fatalf("ParseRef(%+v) = %+v, %v; want it unchanged", got, again, err)
		}

		tgt, err := parseRef(ref)
		if err != nil {
			t.Fatal(err)
		}
		label, id := tgt.keyAttrs()
		if len(label) == 0 && len(id) == 0 {
			t.Fatalf("%q names no key", uri)
		}
		if v, ok := tgt.attrs[attrType]; ok && v != "private" {
			t.Fatalf("%q: type %q accepted", uri, v)
		}

		// go-pkcs11uri is more lenient (it takes any character unencoded),
		// but refuses slot-ids beyond an int and an empty query (which RFC
		// 7512 allows).
		other := pkcs11uri.New()
		_, query, hasQuery := strings.Cut(uri, "?")
		if err := other.Parse(uri); err != nil && !strings.Contains(err.Error(), "slot-id") && (!hasQuery || query != "") {
			t.Fatalf("go-pkcs11uri refuses %q, which ParseRef accepts: %v", uri, err)
		} else if err == nil {
			for name, want := range tgt.attrs {
				if v, _ := other.GetPathAttribute(name, false); v != want {
					t.Fatalf("%q: %s is %q, go-pkcs11uri reads %q", uri, name, want, v)
				}
			}
			if v, ok := other.GetQueryAttribute(attrModulePath, false); ok && v != got.Module && module == "" {
				t.Fatalf("%q: module-path is %q, go-pkcs11uri reads %q", uri, got.Module, v)
			}
		}

		canonical := tgt.describe()
		if len(canonical) > MaxURIBytes {
			return
		}
		back, err := parseRef(Ref{URI: canonical, Module: "/m.so", PINFile: "/p"})
		if err != nil {
			t.Fatalf("canonical form %q of %q: %v", canonical, uri, err)
		}
		if !maps.Equal(back.attrs, tgt.attrs) {
			t.Fatalf("canonical form %q of %q has %q, want %q", canonical, uri, back.attrs, tgt.attrs)
		}
	})
}

// maskPINValues replaces the value of each pin-value attribute of uri with
// as many Zs, splitting uri as parseRef does; ok says whether it had one.
func maskPINValues(uri string) (masked string, ok bool) {
	rest, isPKCS11 := strings.CutPrefix(uri, "pkcs11:")
	if !isPKCS11 || len(uri) > MaxURIBytes {
		return uri, false
	}
	mask := func(part string) string {
		name, value, hasValue := strings.Cut(part, "=")
		if name != attrPINValue {
			return part
		}
		ok = true
		if !hasValue {
			return part
		}
		return name + "=" + strings.Repeat("Z", len(value))
	}
	path, query, hasQuery := strings.Cut(rest, "?")
	parts := strings.Split(path, ";")
	for i := range parts {
		parts[i] = mask(parts[i])
	}
	masked = "pkcs11:" + strings.Join(parts, ";")
	if hasQuery {
		parts = strings.Split(query, "&")
		for i := range parts {
			parts[i] = mask(parts[i])
		}
		masked += "?" + strings.Join(parts, "&")
	}
	return masked, ok
}
