// tests/helm/render.go: renders a Helm chart's templates as `helm template` does, for the
// chart test (helm is not packaged in Debian). It has Go's text/template with the sprig
// functions (Debian's golang-github-masterminds-sprig-dev) and the Helm functions the Kiln
// chart uses: include, tpl, toYaml, required, fail.
//
//	render [-f VALUES.yaml ...] [-notes] CHART_DIR
//
// Values files are merged over the chart's values.yaml (maps deeply, other values replaced).
// Output: each non-empty template as a YAML document headed "# Source: <chart>/templates/<f>";
// with -notes, NOTES.txt alone. A template error exits 1 with the error.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"gopkg.in/yaml.v3"
)

type valueFiles []string

func (v *valueFiles) String() string     { return strings.Join(*v, ",") }
func (v *valueFiles) Set(s string) error { *v = append(*v, s); return nil }

func readYAML(path string) map[string]interface{} {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		fail("%s: %v", path, err)
	}
	return out
}

// merge puts over's keys on base: maps merge deeply, anything else replaces.
func merge(base, over map[string]interface{}) map[string]interface{} {
	for k, v := range over {
		if bm, ok := base[k].(map[string]interface{}); ok {
			if om, ok := v.(map[string]interface{}); ok {
				base[k] = merge(bm, om)
				continue
			}
		}
		base[k] = v
	}
	return base
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "render: "+format+"\n", args...)
	os.Exit(1)
}

func toYAML(v interface{}) (string, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

func main() {
	var files valueFiles
	flag.Var(&files, "f", "values file merged over the chart's (repeatable)")
	notes := flag.Bool("notes", false, "render NOTES.txt only")
	flag.Parse()
	if flag.NArg() != 1 {
		fail("usage: render [-f VALUES.yaml ...] [-notes] CHART_DIR")
	}
	dir := flag.Arg(0)
	chart := readYAML(filepath.Join(dir, "Chart.yaml"))
	values := readYAML(filepath.Join(dir, "values.yaml"))
	for _, f := range files {
		values = merge(values, readYAML(f))
	}
	top := map[string]interface{}{
		"Values":  values,
		"Chart":   map[string]interface{}{"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]},
		"Release": map[string]interface{}{"Name": "test", "Namespace": "default", "Service": "Helm"},
	}

	root := template.New("chart").Option("missingkey=zero")
	funcs := sprig.TxtFuncMap()
	funcs["toYaml"] = toYAML
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil || v == "" {
			return nil, fmt.Errorf("%s", msg)
		}
		if l, ok := v.([]interface{}); ok && len(l) == 0 {
			return nil, fmt.Errorf("%s", msg)
		}
		return v, nil
	}
	funcs["fail"] = func(msg string) (string, error) { return "", fmt.Errorf("%s", msg) }
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var b bytes.Buffer
		err := root.ExecuteTemplate(&b, name, data)
		return b.String(), err
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := root.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var b bytes.Buffer
		err = t.Execute(&b, data)
		return b.String(), err
	}
	root.Funcs(funcs)

	paths, _ := filepath.Glob(filepath.Join(dir, "templates", "*"))
	sort.Strings(paths)
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			fail("%v", err)
		}
		if _, err := root.New(filepath.Base(p)).Parse(string(data)); err != nil {
			fail("%v", err)
		}
	}
	name := fmt.Sprint(chart["name"])
	for _, p := range paths {
		base := filepath.Base(p)
		isNotes := base == "NOTES.txt"
		if strings.HasPrefix(base, "_") || isNotes != *notes {
			continue
		}
		var b bytes.Buffer
		if err := root.ExecuteTemplate(&b, base, top); err != nil {
			fail("%v", err)
		}
		if *notes {
			fmt.Print(b.String())
			continue
		}
		if strings.TrimSpace(b.String()) == "" {
			continue
		}
		fmt.Printf("---\n# Source: %s/templates/%s\n%s\n", name, base, strings.TrimSpace(b.String()))
	}
}
