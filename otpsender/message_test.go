package otpsender

import (
	"strings"
	"testing"
	"time"
)

func TestMessagesRender(t *testing.T) {
	m := Messages{
		"com.example.app": "{app}: {code} ({minutes} min)",
		AnyApp:            "Code {code}, valid {minutes} minutes",
	}
	for _, c := range []struct {
		name     string
		messages Messages
		app      string
		ttl      time.Duration
		want     string
	}{
		{"the app's own template", m, "com.example.app", 5 * time.Minute, "com.example.app: 123456 (5 min)"},
		{"any app's template, minutes rounded up", m, "com.other", 90 * time.Second, "Code 123456, valid 2 minutes"},
		{"no ttl: at least one minute", m, "com.other", 0, "Code 123456, valid 1 minutes"},
		{"no templates: the default", nil, "com.other", 10 * time.Minute, "Your login code is 123456. It expires in 10 min. Do not share it."},
		// {app} in another app's template: never the client's app id.
		{"only another app's template: the default", Messages{"a": "{code} for {app}"}, "evil.example", time.Minute, "Your login code is 123456. It expires in 1 min. Do not share it."},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.messages.Render(c.app, "123456", c.ttl); got != c.want {
				t.Errorf("%v for %s: %q, want %q", c.messages, c.app, got, c.want)
			}
		})
	}
}

func TestMessagesValidate(t *testing.T) {
	if err := (Messages{AnyApp: "{code} in {minutes}", "a": "{app}: {code}"}).Validate(); err != nil {
		t.Fatal(err)
	}
	for tmpl, want := range map[string]string{
		"no code here":          "lacks {code}",
		"{code} {env.SECRET}":   "unknown placeholder {env.SECRET}",
		"{code} for {app}":      "{app} only in an app's own template",
		"{code} in {minutes}s}": "", // a stray brace is text
	} {
		t.Run(tmpl, func(t *testing.T) {
			err := (Messages{AnyApp: tmpl}).Validate()
			if (err == nil) != (want == "") || (err != nil && !strings.Contains(err.Error(), want)) {
				t.Errorf("%v, want %q", err, want)
			}
		})
	}
}
