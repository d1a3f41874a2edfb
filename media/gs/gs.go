// Package gs adds gs:// (Google Cloud Storage) to the storage URLs the messenger takes,
// e.g. "gs://chat-files", with credentials from the environment as Google's SDK finds
// them (GOOGLE_APPLICATION_CREDENTIALS, or the machine's service account). It is not
// in the default build, which it would grow by about 27 MB (docs/storage.md); add it:
//
//	xcaddy build --with github.com/caddy-messenger/messenger --with github.com/caddy-messenger/messenger/media/gs
//
// Google Cloud Storage also speaks S3 (endpoint https://storage.googleapis.com with
// HMAC keys), which the default build takes as an s3:// URL.
package gs

import _ "gocloud.dev/blob/gcsblob" // registers gs://
