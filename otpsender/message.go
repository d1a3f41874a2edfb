package otpsender

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddy-messenger/messenger/otp"
)

// Messages are the texts of the SMS that carry codes: a template per app id, and one under
// AnyApp for every app without its own. In a template, {code} stands for the code,
// {minutes} for how many minutes it is valid, and {app} for the app id (only in an app's
// own template: the AnyApp template serves whatever app id a client sends, and that is
// no text to put into an SMS to someone's phone).
type Messages map[string]string

// AnyApp is the key of the template for every app without one of its own.
const AnyApp = "*"

// DefaultMessage is the template when there is none for the app, nor under AnyApp.
const DefaultMessage = "Your login code is {code}. It expires in {minutes} min. Do not share it."

var placeholder = regexp.MustCompile(`\{[^{}]*\}`)

// Validate checks that every template carries the code and uses only the placeholders
// it may.
func (m Messages) Validate() error {
	var errs []error
	for _, app := range slices.Sorted(maps.Keys(m)) {
		tmpl := m[app]
		if !strings.Contains(tmpl, "{code}") {
			errs = append(errs, fmt.Errorf("otp message for %s: the template lacks {code}", app))
		}
		for _, p := range placeholder.FindAllString(tmpl, -1) {
			switch {
			case p == "{app}" && app == AnyApp:
				errs = append(errs, fmt.Errorf("otp message for %s: {app} only in an app's own template (it would put whatever app id a client sends into the SMS)", app))
			case p != "{code}" && p != "{minutes}" && p != "{app}":
				errs = append(errs, fmt.Errorf("otp message for %s: unknown placeholder %s (want {code}, {minutes}, {app})", app, p))
			}
		}
	}
	return errors.Join(errs...)
}

// Render returns the text that carries code to a user of appID; the code lives ttl.
func (m Messages) Render(appID, code string, ttl time.Duration) string {
	tmpl, own := m[appID]
	if !own {
		appID = "" // see Messages: never the client's app id in a shared template
		var ok bool
		if tmpl, ok = m[AnyApp]; !ok {
			tmpl = DefaultMessage
		}
	}
	minutes := max(1, int(math.Ceil(ttl.Minutes())))
	return strings.NewReplacer("{code}", code, "{minutes}", strconv.Itoa(minutes), "{app}", appID).Replace(tmpl)
}

// smsText is the text of d: the one rendered for its app, or the default template's.
func smsText(d otp.Delivery) string {
	if d.Text != "" {
		return d.Text
	}
	return Messages(nil).Render(d.AppID, d.Code, d.TTL)
}
