// Command gotemplate renders an Ollama Modelfile TEMPLATE with Go's own text/template, the way
// Ollama's template package does, for tests/families/test_modelfile_go.py.
//
// Usage: gotemplate TEMPLATE_FILE DATA_FILE
//
// DATA_FILE is JSON: {"messages": [{"role": ..., "content": ...}, ...]}, the chat request's
// messages. As Ollama's template.Execute does for a template that uses .Messages, they are
// collated (consecutive messages of one role merged with "\n\n"; every system message also joined
// with "\n\n" into .System, and kept in .Messages) and the template runs once on
// {System, Messages, Tools, Response: ""}. The template is parsed with Option("missingkey=zero")
// as Ollama parses it. Ollama's FuncMap (json, currentDate, yesterdayDate, toTypeScriptType) is
// left out: the Modelfile templates use only text/template's builtins (eq, ne, and, len, slice).
// Ollama's legacy path (.Prompt/.Response per turn, for templates without .Messages) and its
// appending of {{ .Response }} to templates that name neither .Messages nor .Response are not
// reproduced: every template this helper is given uses .Messages, which Ollama checks first.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

// Message mirrors the fields of Ollama's api.Message that a template reads.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type data struct {
	Messages []Message `json:"messages"`
}

// collate is Ollama's template.collate: the joined system messages and the merged messages.
func collate(msgs []Message) (string, []*Message) {
	var system []string
	var collated []*Message
	for i := range msgs {
		msg := msgs[i]
		if msg.Role == "system" {
			system = append(system, msg.Content)
		}
		if len(collated) > 0 && collated[len(collated)-1].Role == msg.Role {
			collated[len(collated)-1].Content += "\n\n" + msg.Content
		} else {
			collated = append(collated, &msg)
		}
	}
	return strings.Join(system, "\n\n"), collated
}

func run() error {
	if len(os.Args) != 3 {
		return fmt.Errorf("usage: gotemplate TEMPLATE_FILE DATA_FILE")
	}
	text, err := os.ReadFile(os.Args[1])
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(os.Args[2])
	if err != nil {
		return err
	}
	var d data
	if err := json.Unmarshal(raw, &d); err != nil {
		return err
	}
	tmpl, err := template.New("").Option("missingkey=zero").Parse(string(text))
	if err != nil {
		return err
	}
	system, messages := collate(d.Messages)
	return tmpl.Execute(os.Stdout, map[string]any{
		"System":   system,
		"Messages": messages,
		"Tools":    nil,
		"Response": "",
	})
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gotemplate:", err)
		os.Exit(1)
	}
}
