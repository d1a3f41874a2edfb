// Package azblob adds azblob:// (Azure Blob Storage) to the storage URLs the messenger
// takes, e.g. "azblob://chat-files", with the account and credentials from the
// environment (AZURE_STORAGE_ACCOUNT, AZURE_STORAGE_KEY or Azure's default
// credentials). It is not in the default build, which it would grow by about 11 MB
// (docs/storage.md); add it:
//
//	xcaddy build --with github.com/caddy-messenger/messenger --with github.com/caddy-messenger/messenger/media/azblob
package azblob

import _ "gocloud.dev/blob/azureblob" // registers azblob://
