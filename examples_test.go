package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExampleConfigs loads every config in examples/ as the agent its name
// says (*-server.yaml, *-client.yaml), in a folder holding the certificate
// files the examples name, so the examples never rot: a key renamed or a
// route that allows nobody fails here.
func TestExampleConfigs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("examples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	dir := readmePKI(t)
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			file := writeFile(t, dir, name, string(data))
			switch {
			case strings.HasSuffix(name, "-server.yaml"):
				cfg, err := resolveServer(t, []string{"--config", file})
				if err != nil {
					t.Fatal(err)
				}
				if len(cfg.Routes) == 0 {
					t.Error("no routes")
				}
			case strings.HasSuffix(name, "-client.yaml"):
				cfg, err := resolveClient(t, []string{"--config", file})
				if err != nil {
					t.Fatal(err)
				}
				if len(cfg.Routes) == 0 || len(cfg.Servers) == 0 {
					t.Errorf("routes %v, servers %v", cfg.Routes, cfg.Servers)
				}
			default:
				t.Fatalf("%s: name it *-server.yaml or *-client.yaml so the test knows the agent", name)
			}
		})
	}
}
