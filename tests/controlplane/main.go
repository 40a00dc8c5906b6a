// Command controlplane is the Kubernetes control plane that Falco Triage's integration tests
// run against: real etcd, kube-apiserver, kube-controller-manager and kubectl, built from the
// Kubernetes Go modules pinned in go.mod, in one multi-call binary.
//
// Usage (the first argument names the component; a symlink named after a component works too):
//
//	controlplane etcd --data-dir D --listen-client-urls URL [--listen-peer-urls URL]
//	controlplane kube-apiserver <kube-apiserver flags>
//	controlplane kube-controller-manager <kube-controller-manager flags>
//	controlplane kubectl <kubectl args>          (or: a symlink named kubectl)
//	controlplane certs --dir D                   (CA, serving, admin and service-account keys)
//
// Built by build_controlplane in tests/support/controlplane.py: CGO_ENABLED=0 go build -trimpath,
// with -ldflags -X that stamp the Kubernetes version from go.mod (upstream's build does the same;
// without them every component reports v0.0.0-master).
//
// Why one binary: the Kubernetes packages are large and mostly shared between the components, so
// one link is much faster to build than four and takes a quarter of the disk.
//
// Why still one process per component: kube-apiserver and kube-controller-manager keep
// process-wide state (feature gates, the legacy scheme, metric and flag registries) that they
// expect to own, and etcd must outlive an API server restart. The tests therefore start this
// binary once per component, each in its own process, never two components in one.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	// Blank imports copied from the upstream main packages of each component: time zones for
	// CronJobs, JSON log format and the client-go/version metrics they register at init.
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

const usage = `usage: controlplane COMPONENT [ARGS...]

components:
  etcd                      embedded etcd (flags: see "controlplane etcd --help")
  kube-apiserver            the Kubernetes API server
  kube-controller-manager   the Kubernetes controller manager
  kubectl                   kubectl (also when invoked through a symlink named kubectl)
  certs                     write a test PKI into --dir
`

func main() {
	component, args := split(os.Args)
	// Each component parses os.Args itself (cobra reads os.Args[1:], kubectl's plugin handling
	// reads os.Args directly), so present the arguments as if the component were its own binary.
	os.Args = append([]string{component}, args...)
	exitWithParent()

	switch component {
	case "etcd":
		os.Exit(runEtcd(args))
	case "certs":
		os.Exit(runCerts(args))
	case "kube-apiserver":
		os.Exit(cli.Run(apiserver.NewAPIServerCommand()))
	case "kube-controller-manager":
		os.Exit(cli.Run(controllermanager.NewControllerManagerCommand()))
	case "kubectl":
		// Same as upstream cmd/kubectl: errors are printed the kubectl way, with its exit codes.
		if err := cli.RunNoErrOutput(kubectlcmd.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
		os.Exit(0)
	default:
		fmt.Fprint(os.Stderr, usage)
		if component != "" && component != "-h" && component != "--help" && component != "help" {
			fmt.Fprintf(os.Stderr, "\nunknown component %q\n", component)
		}
		os.Exit(2)
	}
}

// split returns the component to run and its arguments: the basename of argv[0] when the binary
// is invoked through a symlink named after a component, otherwise the first argument.
func split(argv []string) (string, []string) {
	name := strings.TrimSuffix(filepath.Base(argv[0]), ".exe")
	switch name {
	case "etcd", "kube-apiserver", "kube-controller-manager", "kubectl":
		return name, argv[1:]
	}
	if len(argv) < 2 {
		return "", nil
	}
	return argv[1], argv[2:]
}

// exitWithParent makes this process stop itself once the process named by
// CONTROLPLANE_PARENT_PID is gone, for example a test run that was killed before it could stop
// its control plane. Without it, etcd and kube-apiserver would be left running, holding their
// ports. Polling getppid works from any thread of the parent, unlike the Linux parent-death
// signal, which follows the thread that started the child.
//
// SIGTERM first, for a clean shutdown; but kube-apiserver's shutdown hangs when etcd is already
// gone (which it is, as etcd stops at once), so exit regardless ten seconds later.
func exitWithParent() {
	parent, err := strconv.Atoi(os.Getenv("CONTROLPLANE_PARENT_PID"))
	if err != nil || parent != os.Getppid() {
		return
	}
	go func() {
		for os.Getppid() == parent {
			time.Sleep(time.Second)
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		time.Sleep(10 * time.Second)
		os.Exit(1)
	}()
}
