// Command etcd is the etcd server of the pinned go.etcd.io/etcd/server/v3 release, built from
// the Go module proxy for the test environment (see hack/build-k8s.sh). It adds nothing to
// etcd's own entry point.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
