package handlers

import (
	"context"
	"errors"
	"net/netip"

	"go.uber.org/zap"

	"github.com/caddy-messenger/messenger/mesiboclient"
	"github.com/caddy-messenger/messenger/metrics"
	"github.com/caddy-messenger/messenger/otp"
	"github.com/caddy-messenger/messenger/phone"
	"github.com/caddy-messenger/messenger/ratelimit"
	"github.com/caddy-messenger/messenger/store"
)

// login requests a code (no otp field) or exchanges one for an access token.
func (a *API) login(ctx context.Context, c *call) *Response {
	req := c.req
	appID := req.Get("appid")
	if appID == "" {
		return fail("login", c.now, CodeMissingApp, "")
	}
	if req.Has("aktoken") {
		return fail("login", c.now, CodeBadAKToken, "This app version is no longer supported; please update it.")
	}
	if _, code := req.Text("name", maxTextBytes); code != "" {
		return fail("login", c.now, code, "")
	}
	if a.Identity != nil {
		return a.identityLogin(ctx, c, appID)
	}
	num, resp := a.loginPhone(c)
	if resp != nil {
		return resp
	}
	code := req.Get("otp")
	if code == "" {
		code = req.Get("code") // field name of older apps
	}
	if code == "" {
		return a.sendCode(ctx, c, num, appID)
	}
	return a.verifyCode(ctx, c, num, appID, code)
}

// loginPhone normalises the phone field; numbers with a fixed review code may lie
// outside any numbering plan.
func (a *API) loginPhone(c *call) (phone.Number, *Response) {
	raw := c.req.Get("phone")
	num, err := phone.Parse(raw)
	if err != nil {
		lenient, lerr := phone.Lenient(raw)
		if _, fixed := a.Codes.FixedCode(lenient.Digits); lerr != nil || !fixed {
			return phone.Number{}, fail("login", c.now, CodeBadPhone, "Invalid phone number")
		}
		num = lenient
	}
	return num, nil
}

// sendCode issues a code and delivers it, within the rate limits. The answer is the same
// whether or not the number has an account.
func (a *API) sendCode(ctx context.Context, c *call, num phone.Number, appID string) *Response {
	limits := a.Config.OTPLimits
	wait, err := a.Limiter.Allow(ctx,
		ratelimit.Check{Key: "otp:ip:" + ratelimit.ClientKey(c.req.ClientIP), Rules: limits.PerIP},
		ratelimit.Check{Key: "otp:phone:" + num.Digits, Rules: limits.PerPhone},
		ratelimit.Check{Key: "otp:global", Rules: limits.Global},
	)
	if err != nil {
		// Fail closed: without the shared counters, codes could be sent without limit.
		a.logError(ctx, "otp rate limit unavailable", zap.Error(err))
		return tempFail("login", c.now, "")
	}
	if wait > 0 {
		a.Metrics.OTP(metrics.OTPRateLimited)
		return rateLimited("login", c.now, wait)
	}
	code, err := a.Codes.Issue(ctx, num.Digits)
	if err != nil {
		a.logError(ctx, "otp store unavailable", zap.Error(err))
		return tempFail("login", c.now, "")
	}
	d := otp.Delivery{Phone: num.Digits, Code: code, AppID: appID, TTL: a.Config.CodeTTL}
	if a.Config.CodeText != nil {
		d.Text = a.Config.CodeText(appID, code)
	}
	if err := a.Sender.SendOTP(ctx, d); err != nil {
		a.logError(ctx, "otp delivery failed", zap.Error(err))
		return tempFail("login", c.now, "Could not send the code. Please try again later.")
	}
	a.Metrics.OTP(metrics.OTPSent)
	return ok("login", c.now)
}

// verifyCode checks the code, has mesibo create the user and its token, and stores both.
// The code is used up before mesibo is called, so two parallel logins with one code can
// never mint two tokens.
func (a *API) verifyCode(ctx context.Context, c *call, num phone.Number, appID, code string) *Response {
	// One address may check a few times as many codes as it may request, so guessing
	// across many numbers from one place is bounded too.
	wait, err := a.Limiter.Allow(ctx, ratelimit.Check{
		Key: "otpcheck:ip:" + ratelimit.ClientKey(c.req.ClientIP), Rules: a.Config.OTPLimits.ChecksPerIP,
	})
	switch {
	case err != nil:
		a.logError(ctx, "otp rate limit unavailable", zap.Error(err))
		return tempFail("login", c.now, "")
	case wait > 0:
		a.Metrics.OTP(metrics.OTPRateLimited)
		return rateLimited("login", c.now, wait)
	}
	err = a.Codes.Verify(ctx, num.Digits, code)
	switch {
	case errors.Is(err, otp.ErrBadCode):
		a.Metrics.OTP(metrics.OTPFailed)
		return fail("login", c.now, CodeBadCode, "Invalid OTP")
	case err != nil:
		a.logError(ctx, "otp store unavailable", zap.Error(err))
		return tempFail("login", c.now, "")
	}
	a.Metrics.OTP(metrics.OTPVerified)
	return a.completeLogin(ctx, c, num, appID)
}

// identityLogin logs in the user that an auth handler earlier in the route established:
// no code, but the same rate limits per identity and per IP as code sending.
func (a *API) identityLogin(ctx context.Context, c *call, appID string) *Response {
	raw := a.Identity.Identity(c.req)
	if raw == "" {
		return fail("login", c.now, CodeAuthFail, "")
	}
	num, err := phone.Parse(raw)
	if err != nil {
		return fail("login", c.now, CodeBadPhone, "Invalid phone number")
	}
	limits := a.Config.OTPLimits
	wait, err := a.Limiter.Allow(ctx,
		ratelimit.Check{Key: "login:ip:" + ratelimit.ClientKey(c.req.ClientIP), Rules: limits.PerIP},
		ratelimit.Check{Key: "login:id:" + num.Digits, Rules: limits.PerPhone},
	)
	switch {
	case err != nil:
		a.logError(ctx, "login rate limit unavailable", zap.Error(err))
		return tempFail("login", c.now, "")
	case wait > 0:
		return rateLimited("login", c.now, wait)
	}
	return a.completeLogin(ctx, c, num, appID)
}

// completeLogin has mesibo create the verified user and its token, stores both and
// answers with the user's profile.
func (a *API) completeLogin(ctx context.Context, c *call, num phone.Number, appID string) *Response {
	name := c.req.Get("name")
	user, err := a.Mesibo.UserAdd(ctx, mesiboclient.UserAddRequest{
		Address: num.Digits, Name: name, AppID: appID,
		ExpiryMinutes: int(a.Config.TokenExpiry.Minutes()),
	})
	if resp := a.mesiboFailure(ctx, "login", c, err); resp != nil {
		return resp
	}

	compose, wake := wakeAfter(a, a.profileNotification(ctx, a.Config.Notifications.NewUser, a.Config.Notifications.NewUserMessage))
	saved, isNew, err := a.Store.SaveLogin(ctx, store.Login{
		UID: user.UID, Phone: num.Digits, CC: num.CC, Name: name, Token: user.Token,
		Expiry: c.now.Add(a.Config.TokenExpiry), IPv4: ipv4(c.req.ClientIP),
		Device: deviceType(c.req), TS: c.now.Unix(),
	}, compose)
	var taken *store.UIDTakenError
	switch {
	case errors.As(err, &taken):
		// mesibo's state and ours disagree: an operator must look. The login is refused
		// rather than handed another user's account.
		a.Logger.Error("mesibo gave this login a uid that another number's user has; refused",
			zap.Int64("uid", taken.UID), zap.Int64("number_uid", taken.PhoneUID))
		return fail("login", c.now, CodeBadUser, "")
	case err != nil:
		a.logError(ctx, "saving login failed", zap.Error(err))
		return fail("login", c.now, CodeDBError, "")
	}
	a.Logger.Info("user logged in", zap.Int64("uid", saved.UID), zap.Bool("new", isNew))
	wake()

	resp := ok("login", c.now)
	resp.Body["token"] = user.Token
	resp.Body["phone"] = saved.Phone
	resp.Body["cc"] = itoa(int64(saved.CC))
	resp.Body["name"] = saved.Name
	resp.Body["status"] = saved.Status
	resp.Body["photo"] = saved.Photo
	resp.Body["google"] = a.Config.GoogleMapsKey
	if tn := a.Media.Thumbnail(ctx, saved.Photo); tn != "" {
		resp.Body["tn"] = tn
	}
	return a.withAppConfig(resp)
}

// mesiboFailure maps a mesibo error to the answer the apps know: a refusal to create the
// user is BADUSER; a refused app token or an unreachable service is BADAPP.
func (a *API) mesiboFailure(ctx context.Context, op string, c *call, err error) *Response {
	if err == nil {
		return nil
	}
	if requestRefused(err) {
		// mesibo said no to this request: the request's matter, not the server's.
		a.Logger.Warn("mesibo refused the request", zap.String("op", op), zap.Error(err))
		return fail(op, c.now, CodeBadUser, "")
	}
	a.logError(ctx, "mesibo call failed", zap.String("op", op), zap.Error(err))
	return fail(op, c.now, CodeBadApp, "")
}

// requestRefused reports whether mesibo refused the request itself; a refused app token
// or an unreachable service is not the request's fault (BADAPP).
func requestRefused(err error) bool {
	var refused *mesiboclient.RefusedError
	return errors.As(err, &refused) && !appTokenRefusal[refused.Code]
}

// appTokenRefusal are mesibo refusal codes that blame the app token, not the request.
var appTokenRefusal = map[string]bool{"AUTHFAIL": true, "BADAPPTOKEN": true, "BADTOKEN": true, "TOKENBREACH": true, "BADAPP": true}

// logout deletes the caller's token and push token, and optionally revokes the token at mesibo.
func (a *API) logout(ctx context.Context, c *call) *Response {
	if err := a.Store.Logout(ctx, c.caller.UID); err != nil {
		a.logError(ctx, "logout failed", zap.Error(err))
		return fail("logout", c.now, CodeDBError, "")
	}
	if a.Config.RevokeOnLogout {
		// Best effort: the token is already unusable here; mesibo's copy expires anyway.
		if err := a.Mesibo.RemoveUserToken(ctx, c.caller.Phone); err != nil {
			a.Logger.Warn("revoking token at mesibo failed", zap.Int64("uid", c.caller.UID), zap.Error(err))
		}
	}
	return ok("logout", c.now)
}

// loginUI is a legacy op; nothing depends on its answer.
func (a *API) loginUI(_ context.Context, c *call) *Response {
	resp := ok("loginui", c.now)
	resp.Body["ui"] = "0"
	return resp
}

// ipv4 is the client address as the original's int column holds it; 0 for IPv6.
func ipv4(ip string) uint32 {
	addr, err := netip.ParseAddr(ip)
	if err != nil || !addr.Unmap().Is4() {
		return 0
	}
	b := addr.Unmap().As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// deviceType is the dt field clamped to the tinyint columns that hold it.
func deviceType(req *Request) int {
	return int(min(max(req.Int("dt"), 0), 255))
}
