// Command pulumi-resource-postgresql is a minimal Pulumi resource plugin that
// bridges the upstream Terraform PostgreSQL provider (cyrilgdn) through
// pulumi-terraform-bridge, with resource tokens laid out the way the published
// pulumi_postgresql SDKs expect them ("postgresql:index/<lowerName>:<Name>").
//
// It exists because the official provider module is not available from the
// Go module proxy reachable on our build machines; see ../README.md.
package main

import (
	upstream "github.com/terraform-providers/terraform-provider-postgresql/postgresql"

	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	bridgetokens "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge/tokens"
	shimv2 "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfshim/sdk-v2"
	"github.com/pulumi/pulumi/sdk/v3/go/common/tokens"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "0.0.0-dev"

// schemaJSON optionally carries the Pulumi package schema. The bridge only
// uses it to answer GetSchema and for advisory input type checks; an empty
// value is accepted (both are skipped).
var schemaJSON []byte

const (
	pkgName = "postgresql"
	modName = "index"
)

// token builds "postgresql:index/<name with lower-case first letter>:<name>".
func token(name string) tokens.Type {
	lower := string(name[0]|0x20) + name[1:]
	return tokens.Type(pkgName + ":" + modName + "/" + lower + ":" + name)
}

func providerInfo() tfbridge.ProviderInfo {
	info := tfbridge.ProviderInfo{
		P:       shimv2.NewProvider(upstream.Provider()),
		Name:    pkgName,
		Version: version,
		Config: map[string]*tfbridge.SchemaInfo{
			"sslmode": {Default: &tfbridge.DefaultInfo{EnvVars: []string{"PGSSLMODE"}}},
			"connect_timeout": {Default: &tfbridge.DefaultInfo{
				EnvVars: []string{"PGCONNECT_TIMEOUT"},
				Value:   180,
			}},
		},
		Resources: map[string]*tfbridge.ResourceInfo{
			"postgresql_grant":      {Tok: token("Grant"), DeleteBeforeReplace: true},
			"postgresql_grant_role": {Tok: token("GrantRole")},
		},
		EnableZeroDefaultSchemaVersion: true,
		EnableAccurateBridgePreview:    true,
	}

	// The SDKs expose both DefaultPrivileges and the legacy DefaultPrivileg
	// (an alias of the same Terraform resource).
	info.RenameResourceWithAlias("postgresql_default_privileges",
		token("DefaultPrivileg"), token("DefaultPrivileges"), modName, modName, nil)

	// Every other resource and data source: postgresql_foo_bar -> index/fooBar:FooBar
	// (data sources get the usual "get" prefix).
	info.MustComputeTokens(bridgetokens.SingleModule(pkgName+"_", modName,
		bridgetokens.MakeStandard(pkgName)))

	// Names such as Schema.name are auto-generated from the resource name when omitted.
	info.SetAutonaming(255, "-")
	return info
}

func main() {
	tfbridge.Main(pkgName, version, providerInfo(), schemaJSON)
}
