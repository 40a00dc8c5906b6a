package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// runEtcd runs a single-member etcd in this process until SIGTERM or SIGINT.
//
// The flags are a subset of the real etcd binary's, with the same names and meaning, so the test
// launcher passes the same arguments whether it runs this binary or an envtest etcd.
//
// Unix socket URLs follow etcd's own convention: the part after unix:// must look like
// host:port and names a socket file relative to the working directory (for example
// unix://localhost:2379 creates ./localhost:2379). The launcher runs every component in the
// test's temporary directory, so sockets cannot collide between test runs, unlike TCP ports.
func runEtcd(args []string) int {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	name := fs.String("name", embed.DefaultName, "member name")
	dataDir := fs.String("data-dir", "", "data directory (required)")
	listenClient := fs.String("listen-client-urls", "unix://localhost:2379", "comma-separated client URLs to listen on")
	fs.StringVar(listenClient, "listen-client-url", "unix://localhost:2379", "alias of --listen-client-urls")
	advertiseClient := fs.String("advertise-client-urls", "", "client URLs to advertise (default: the listen URLs)")
	listenPeer := fs.String("listen-peer-urls", "unix://localhost:2380", "comma-separated peer URLs to listen on")
	advertisePeer := fs.String("initial-advertise-peer-urls", "", "peer URLs to advertise (default: the listen URLs)")
	initialCluster := fs.String("initial-cluster", "", "initial cluster (default: this member alone)")
	// Test data is thrown away after the run: skipping fsync makes every write several times faster.
	noFsync := fs.Bool("unsafe-no-fsync", true, "disable fsync (data loss on power failure)")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dataDir == "" {
		fmt.Fprintln(os.Stderr, "etcd: --data-dir is required")
		return 2
	}

	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dataDir
	cfg.UnsafeNoFsync = *noFsync
	cfg.LogLevel = *logLevel
	var err error
	if cfg.ListenClientUrls, err = parseURLs(*listenClient); err != nil {
		return fail(err)
	}
	if cfg.AdvertiseClientUrls, err = parseURLs(orDefault(*advertiseClient, *listenClient)); err != nil {
		return fail(err)
	}
	if cfg.ListenPeerUrls, err = parseURLs(*listenPeer); err != nil {
		return fail(err)
	}
	if cfg.AdvertisePeerUrls, err = parseURLs(orDefault(*advertisePeer, *listenPeer)); err != nil {
		return fail(err)
	}
	cfg.InitialCluster = orDefault(*initialCluster, cfg.InitialClusterFromName(cfg.Name))

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fail(err)
	}
	defer e.Close()

	// A fresh single-member cluster elects itself within a second or two; a minute means it is
	// stuck (for example on a data directory left by another member).
	select {
	case <-e.Server.ReadyNotify():
		fmt.Fprintf(os.Stderr, "etcd: ready, serving clients on %s\n", *listenClient)
	case err := <-e.Err():
		return fail(err)
	case <-time.After(time.Minute):
		return fail(fmt.Errorf("not ready after one minute"))
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	select {
	case sig := <-stop:
		fmt.Fprintf(os.Stderr, "etcd: %s received, shutting down\n", sig)
		return 0
	case err := <-e.Err():
		return fail(err)
	}
}

func parseURLs(s string) ([]url.URL, error) {
	var urls []url.URL
	for _, part := range strings.Split(s, ",") {
		u, err := url.Parse(strings.TrimSpace(part))
		if err != nil {
			return nil, err
		}
		urls = append(urls, *u)
	}
	return urls, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func fail(err error) int {
	fmt.Fprintf(os.Stderr, "etcd: %v\n", err)
	return 1
}
