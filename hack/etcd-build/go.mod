// The etcd server for the test environment; hack/build-k8s.sh pins the version and builds it.
module modelconv.test/etcd-build

go 1.26.0
