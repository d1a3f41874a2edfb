package otpsender

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sns/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-messenger/messenger/metrics"
	"github.com/caddy-messenger/messenger/otp"
)

func init() {
	caddy.RegisterModule(SNS{})
}

// SNS sends codes as SMS through Amazon SNS: a Publish to the phone number, signed with
// SigV4 by the AWS SDK for Go v2, as a transactional SMS.
type SNS struct {
	// Region is the AWS region whose SNS sends. Default: the SDK's (AWS_REGION, or the
	// region of the shared config's profile).
	Region string `json:"region,omitempty"`
	// AccessKeyID is the key of static credentials allowed sns:Publish. Placeholders.
	// Default: the SDK's credential chain: the environment, the shared credentials and
	// config files, web identity, and the container's or the instance's role.
	AccessKeyID string `json:"access_key_id,omitempty"`
	// SecretAccessKey goes with AccessKeyID. Placeholders.
	SecretAccessKey string `json:"secret_access_key,omitempty"`
	// SessionToken goes with temporary static credentials. Placeholders.
	SessionToken string `json:"session_token,omitempty"`
	// SenderID is the alphanumeric sender ID shown where the country supports one.
	SenderID string `json:"sender_id,omitempty"`
	// OriginationNumber is the number of the account to send from, in E.164 form.
	OriginationNumber string `json:"origination_number,omitempty"`
	Gateway

	sns        *sns.Client
	attributes map[string]types.MessageAttributeValue
}

// snsThrottles are the error codes with which SNS refuses a Publish for being too fast.
var snsThrottles = map[string]struct{}{"Throttled": {}, "Throttling": {}, "ThrottlingException": {}}

// CaddyModule returns the Caddy module information.
func (SNS) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "messenger.otp_senders.aws_sns",
		New: func() caddy.Module { return new(SNS) },
	}
}

// Provision loads the AWS config (credentials are resolved at the first Publish) and
// sets up the SNS client.
func (s *SNS) Provision(ctx caddy.Context) error {
	s.provision(ctx, "aws_sns", "") // no endpoint: the SDK's for the region
	repl := caddy.NewReplacer()
	var opts []func(*config.LoadOptions) error
	if region := repl.ReplaceKnown(s.Region, ""); region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	if key := repl.ReplaceKnown(s.AccessKeyID, ""); key != "" {
		opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(
			key, repl.ReplaceKnown(s.SecretAccessKey, ""), repl.ReplaceKnown(s.SessionToken, ""))))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return fmt.Errorf("otp aws_sns: loading the AWS config: %w", err)
	}
	if cfg.Region == "" {
		return errors.New("otp aws_sns: no region: set region, or AWS_REGION")
	}
	s.sns = sns.NewFromConfig(cfg, func(o *sns.Options) {
		if s.endpoint != "" {
			o.BaseEndpoint = aws.String(s.endpoint)
		}
		o.HTTPClient = snsHTTPClient{s.deliverer}
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = s.retries + 1
			so.MaxBackoff = time.Second
			// Only where SNS surely did not take the message (see Gateway.Retries): the SDK's
			// defaults would also repeat timeouts and other 5xx answers, which may come after
			// the SMS went out.
			so.Retryables = []retry.IsErrorRetryable{
				retry.NoRetryCanceledError{},
				retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
					if u := (*unsentError)(nil); errors.As(err, &u) {
						return aws.TrueTernary
					}
					return aws.UnknownTernary
				}),
				retry.RetryableHTTPStatusCode{Codes: map[int]struct{}{http.StatusTooManyRequests: {}, http.StatusServiceUnavailable: {}}},
				retry.RetryableErrorCode{Codes: snsThrottles},
			}
		})
		o.APIOptions = append(o.APIOptions, s.countAttempts)
	})
	s.attributes = map[string]types.MessageAttributeValue{}
	for name, value := range map[string]string{
		// Transactional: routed for reliability rather than cost, as a code must arrive.
		"AWS.SNS.SMS.SMSType":          "Transactional",
		"AWS.SNS.SMS.SenderID":         repl.ReplaceKnown(s.SenderID, ""),
		"AWS.MM.SMS.OriginationNumber": repl.ReplaceKnown(s.OriginationNumber, ""),
	} {
		if value != "" {
			s.attributes[name] = types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(value)}
		}
	}
	return nil
}

// Validate checks the endpoint, if set, and the retries.
func (s *SNS) Validate() error { return s.validate() }

// SendOTP publishes d's text to its phone number.
func (s *SNS) SendOTP(ctx context.Context, d otp.Delivery) error {
	_, err := s.sns.Publish(ctx, &sns.PublishInput{
		PhoneNumber:       aws.String(e164(d)),
		Message:           aws.String(smsText(d)),
		MessageAttributes: s.attributes,
	})
	if err != nil {
		return s.failure(err)
	}
	return nil
}

// countAttempts counts every attempt the SDK makes, inside its retry loop.
func (s *SNS) countAttempts(stack *middleware.Stack) error {
	return stack.Finalize.Insert(middleware.FinalizeMiddlewareFunc("MessengerOTPAttempts",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			start := time.Now()
			out, md, err := next.HandleFinalize(ctx, in)
			s.metrics.OTPDelivery(s.sender, snsOutcome(err), time.Since(start))
			return out, md, err
		}), "Retry", middleware.After)
}

// snsOutcome is the metrics outcome of an attempt that ended with err.
func snsOutcome(err error) string {
	var apiErr smithy.APIError
	var status interface{ HTTPStatusCode() int }
	switch {
	case err == nil:
		return metrics.DeliveryOK
	case errors.As(err, &apiErr) && errors.As(err, &status):
		if _, throttled := snsThrottles[apiErr.ErrorCode()]; !throttled &&
			status.HTTPStatusCode() >= 400 && status.HTTPStatusCode() < 500 && status.HTTPStatusCode() != http.StatusTooManyRequests {
			return metrics.DeliveryRefused
		}
	}
	return metrics.DeliveryError
}

// failure turns the SDK's error into one that names SNS's error code, or the network's
// error, and nothing of the request.
func (s *SNS) failure(err error) *failure {
	f := &failure{sender: s.sender, refused: snsOutcome(err) == metrics.DeliveryRefused}
	var apiErr smithy.APIError
	var status interface{ HTTPStatusCode() int }
	var unsent *unsentError
	var sendErr *smithyhttp.RequestSendError
	switch {
	case errors.As(err, &apiErr):
		f.reason = "SNS error " + apiErr.ErrorCode()
		if errors.As(err, &status) {
			f.reason = fmt.Sprintf("status %d, %s", status.HTTPStatusCode(), f.reason)
		}
	case errors.As(err, &unsent):
		f.reason, f.err = "unreachable", unsent.err
	case errors.As(err, &sendErr):
		f.reason, f.err = "no answer, and the request may have reached it", sendErr.Err
	default: // before sending: no credentials, or the request's context ended
		f.reason, f.err = "not sent", err
	}
	return f
}

// snsHTTPClient is the SNS client's HTTP client: it marks the errors after which the
// request cannot have reached SNS, the only ones its retryer repeats.
type snsHTTPClient struct{ deliverer }

// Do sends req.
func (c snsHTTPClient) Do(req *http.Request) (*http.Response, error) {
	resp, connected, err := c.do(req)
	if err != nil && !connected {
		return nil, &unsentError{err}
	}
	return resp, err
}

// unsentError is an error after which the request cannot have reached the provider.
type unsentError struct{ err error }

func (u *unsentError) Error() string { return "unreachable: " + u.err.Error() }
func (u *unsentError) Unwrap() error { return u.err }

// UnmarshalCaddyfile sets up the sender from Caddyfile tokens. Syntax:
//
//	sender aws_sns {
//		region             <region>
//		access_key_id      <key>      (default: the SDK's credential chain)
//		secret_access_key  <secret>
//		session_token      <token>
//		sender_id          <ID>
//		origination_number <+number>
//		endpoint           <url>
//		timeout            <duration>
//		retries            <n>
//	}
func (s *SNS) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return unmarshalGateway(d, &s.Gateway, map[string]*string{
		"region": &s.Region, "access_key_id": &s.AccessKeyID, "secret_access_key": &s.SecretAccessKey,
		"session_token": &s.SessionToken, "sender_id": &s.SenderID, "origination_number": &s.OriginationNumber,
	})
}

// Interface guards
var (
	_ otp.Sender            = (*SNS)(nil)
	_ caddy.Provisioner     = (*SNS)(nil)
	_ caddy.Validator       = (*SNS)(nil)
	_ caddy.CleanerUpper    = (*SNS)(nil)
	_ caddyfile.Unmarshaler = (*SNS)(nil)
)
