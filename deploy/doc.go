// Package deploy holds what it takes to run the broker outside a developer's
// machine, and no Go code of its own: the container image (Dockerfile, a
// static binary on distroless, non-root) and minimal Kubernetes manifests
// under kubernetes/ for three replicas sharing cached tokens through Redis
// (the config as a ConfigMap, the Deployment, its Services, disruption
// budget and network policy, an example Redis, and the shape of the Secrets
// they need in secret.example.yaml). docs/deploy.md explains them.
//
// Its tests keep the manifests honest: every document parses and names
// itself; the ConfigMap's config.yaml passes config.Parse with the shared
// cache set; the Deployment mounts every file that config names, from a
// volume that holds it with a mode the broker accepts, and exposes and probes
// the ports it listens on; and the Redis ACL the documentation gives lets the
// shared cache do all it does, and nothing outside its keys and channels,
// against a real redis-server.
package deploy
