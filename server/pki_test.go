package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
)

// testPKI is a CA, a server certificate for 127.0.0.1 and a way to issue
// client certificates, all made with crypto/x509 for the test.
type testPKI struct {
	t      testing.TB
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caPool *x509.CertPool
	server tls.Certificate
}

func newPKI(t testing.TB) *testPKI {
	t.Helper()
	p := &testPKI{t: t}
	p.caKey = newECKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test callers CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	p.caCert, _ = x509.ParseCertificate(der)
	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(p.caCert)
	p.server = p.issue(certSpec{cn: "tokenbroker", ips: []net.IP{net.IPv4(127, 0, 0, 1)}, server: true})
	return p
}

type certSpec struct {
	cn       string
	uri      string
	ips      []net.IP
	server   bool
	notAfter time.Time
}

// issue makes a certificate signed by the CA.
func (p *testPKI) issue(s certSpec) tls.Certificate {
	p.t.Helper()
	key := newECKey(p.t)
	if s.notAfter.IsZero() {
		s.notAfter = time.Now().Add(time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: s.cn},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: s.notAfter, IPAddresses: s.ips,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if s.server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	if s.uri != "" {
		u, err := url.Parse(s.uri)
		if err != nil {
			p.t.Fatal(err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		p.t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (p *testPKI) serverTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.server}}
}

// clientCreds trusts the CA for the server and presents cert, if any.
func (p *testPKI) clientCreds(cert *tls.Certificate) credentials.TransportCredentials {
	cfg := &tls.Config{RootCAs: p.caPool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return credentials.NewTLS(cfg)
}

func newECKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
