//go:build tools

// Package tools only pins the Pulumi CLI main package for `go mod tidy`.
package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
