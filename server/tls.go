package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// callerCreds serves TLS and, when it has client CAs, asks callers for a
// certificate without letting the handshake judge it: the chain is verified
// here, once per connection, and the verdict travels with the connection.
// A bad certificate then becomes UNAUTHENTICATED with its reason in the log,
// instead of a handshake failure the caller sees as UNAVAILABLE.
type callerCreds struct {
	credentials.TransportCredentials
	clientCAs *x509.CertPool
	now       func() time.Time
}

// peerCert is the AuthInfo of a connection: TLS's own, plus what the
// caller's certificate proved.
type peerCert struct {
	credentials.TLSInfo
	identity string    // URI SAN, else CN; "" when no certificate was presented
	notAfter time.Time // the leaf's expiry, checked again on every call
	err      error     // why the certificate was refused, if it was
}

func newCallerCreds(cfg *tls.Config, clientCAs *x509.CertPool, now func() time.Time) credentials.TransportCredentials {
	cfg = cfg.Clone()
	if cfg.MinVersion < tls.VersionTLS12 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if clientCAs != nil {
		cfg.ClientAuth = tls.RequestClientCert
	}
	return &callerCreds{TransportCredentials: credentials.NewTLS(cfg), clientCAs: clientCAs, now: now}
}

func (c *callerCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	tlsInfo, ok := info.(credentials.TLSInfo)
	if !ok || c.clientCAs == nil {
		return conn, info, nil
	}
	pc := &peerCert{TLSInfo: tlsInfo}
	if certs := tlsInfo.State.PeerCertificates; len(certs) > 0 {
		pc.notAfter = certs[0].NotAfter
		pc.identity, pc.err = c.verify(certs)
	}
	return conn, pc, nil
}

func (c *callerCreds) Clone() credentials.TransportCredentials {
	return &callerCreds{TransportCredentials: c.TransportCredentials.Clone(), clientCAs: c.clientCAs, now: c.now}
}

// verify checks the chain against the client CAs for client authentication
// and names the caller by its first URI SAN (a SPIFFE ID), else its CN.
func (c *callerCreds) verify(certs []*x509.Certificate) (string, error) {
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots: c.clientCAs, Intermediates: inter, CurrentTime: c.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return "", fmt.Errorf("client certificate refused: %w", err)
	}
	if len(certs[0].URIs) > 0 {
		return certs[0].URIs[0].String(), nil
	}
	if cn := certs[0].Subject.CommonName; cn != "" {
		return cn, nil
	}
	return "", errors.New("client certificate names no one: it has neither a URI SAN nor a CN")
}

// certIdentity returns the verified certificate identity of the call's
// connection, "" when none was presented, or why the certificate is refused.
func certIdentity(ctx context.Context, now time.Time) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", nil
	}
	pc, ok := p.AuthInfo.(*peerCert)
	if !ok || pc.identity == "" && pc.err == nil {
		return "", nil
	}
	if pc.err != nil {
		return "", pc.err
	}
	if now.After(pc.notAfter) {
		return "", fmt.Errorf("client certificate of %s expired at %s, during the connection", pc.identity, pc.notAfter.UTC().Format(time.RFC3339))
	}
	return pc.identity, nil
}
