// Package server is tokenbroker's transport: the gRPC service and its
// interceptors (recovery, logging, metrics, authentication), input
// validation, the one mapping from errors to gRPC status codes, health and
// reflection, and the HTTP listener for the JWKS, health and Prometheus
// endpoints, with graceful shutdown of both.
//
// It knows no keys: the JWKS endpoint serves whatever a [PublicKeys]
// returns.
package server
