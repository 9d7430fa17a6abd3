// sdkgen: generate a Pulumi SDK from a package schema with the CLI's own code generators (pkg/v3 codegen at the
// CLI's version), without the language hosts `pulumi package gen-sdk` would need (this toolchain has no
// nodejs/go host, and its Python host predates GeneratePackage).
//
//	sdkgen <python|nodejs|go> <schema.json> <out dir>
//
// Built by `toolchain/bootstrap.sh --sdkgen` into the toolchain cache; used by `python -m tools.sdk`.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	gogen "github.com/pulumi/pulumi/pkg/v3/codegen/go"
	"github.com/pulumi/pulumi/pkg/v3/codegen/nodejs"
	"github.com/pulumi/pulumi/pkg/v3/codegen/python"
	"github.com/pulumi/pulumi/pkg/v3/codegen/schema"

	"github.com/blang/semver"
)

// noLoader: the schema must be self-contained (ours references no other package).
type noLoader struct{}

func (noLoader) LoadPackage(pkg string, _ *semver.Version) (*schema.Package, error) {
	return nil, fmt.Errorf("schema references package %q: not supported", pkg)
}

func (noLoader) LoadPackageV2(_ context.Context, d *schema.PackageDescriptor) (*schema.Package, error) {
	return nil, fmt.Errorf("schema references package %q: not supported", d.Name)
}

func (l noLoader) LoadPackageReference(pkg string, v *semver.Version) (schema.PackageReference, error) {
	return nil, fmt.Errorf("schema references package %q: not supported", pkg)
}

func (l noLoader) LoadPackageReferenceV2(_ context.Context, d *schema.PackageDescriptor) (schema.PackageReference, error) {
	return nil, fmt.Errorf("schema references package %q: not supported", d.Name)
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: sdkgen <python|nodejs|go> <schema.json> <out dir>")
		os.Exit(2)
	}
	lang, schemaPath, out := os.Args[1], os.Args[2], os.Args[3]
	data, err := os.ReadFile(schemaPath)
	check(err)
	var spec schema.PackageSpec
	check(json.Unmarshal(data, &spec))
	pkg, diags, err := schema.BindSpec(spec, noLoader{}, schema.ValidationOptions{})
	check(err)
	if diags.HasErrors() {
		check(diags)
	}
	var files map[string][]byte
	switch lang {
	case "python":
		files, err = python.GeneratePackage("sdkgen", pkg, nil, noLoader{})
	case "nodejs":
		files, err = nodejs.GeneratePackage("sdkgen", pkg, nil, nil, false, noLoader{})
	case "go":
		files, err = gogen.GeneratePackage("sdkgen", pkg, nil)
	default:
		err = fmt.Errorf("unknown language %q", lang)
	}
	check(err)
	for name, content := range files {
		path := filepath.Join(out, name)
		check(os.MkdirAll(filepath.Dir(path), 0o755))
		check(os.WriteFile(path, content, 0o644))
	}
	fmt.Printf("%d files written to %s\n", len(files), out)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "sdkgen:", err)
		os.Exit(1)
	}
}
