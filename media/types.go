package media

import (
	"maps"
	"mime"
	"net/http"
	"path"
	"slices"
	"strings"

	"github.com/gabriel-vasile/mimetype"
)

// attachmentTypes are the extensions a chat attachment may be stored under, with the
// type it is served as: what the apps send (photos, videos, voice notes, documents).
// Anything else is stored as .bin and served as a download.
var attachmentTypes = map[string]string{
	"jpg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp",
	"heic": "image/heic", "heif": "image/heif", "avif": "image/avif",
	"mp4": "video/mp4", "m4v": "video/x-m4v", "mov": "video/quicktime", "3gp": "video/3gpp",
	"webm": "video/webm", "mkv": "video/x-matroska",
	"m4a": "audio/mp4", "aac": "audio/aac", "mp3": "audio/mpeg", "ogg": "audio/ogg", "oga": "audio/ogg",
	"opus": "audio/ogg", "amr": "audio/amr", "wav": "audio/wav", "flac": "audio/flac",
	"pdf": "application/pdf", "txt": "text/plain", "csv": "text/csv", "vcf": "text/vcard",
	"rtf": "application/rtf", "zip": "application/zip",
	"doc": "application/msword", "xls": "application/vnd.ms-excel", "ppt": "application/vnd.ms-powerpoint",
	"docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
	"xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
	"pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
	"odt":  "application/vnd.oasis.opendocument.text", "ods": "application/vnd.oasis.opendocument.spreadsheet",
	"odp": "application/vnd.oasis.opendocument.presentation",
}

// AttachmentExtensions are the extensions an attachment may be stored under, sorted.
func AttachmentExtensions() []string {
	return slices.Sorted(maps.Keys(attachmentTypes))
}

// neutralExt is the extension of an attachment of any other type.
const neutralExt = "bin"

// attachmentExt chooses the stored extension of an attachment from its first bytes
// and the client's file name: the client's when it is allowed and agrees with the
// content (a CSV sniffed as plain text, a DOCX sniffed as ZIP), else the sniffed
// type's when allowed, else the client's when allowed (a type the sniffer does not
// know), else neutralExt.
func attachmentExt(head []byte, clientName string) string {
	sniffed := mimetype.Detect(head)
	client := strings.ToLower(strings.TrimPrefix(path.Ext(strings.ReplaceAll(clientName, `\`, "/")), "."))
	clientType, clientOK := attachmentTypes[client]
	if clientOK {
		for m := mimetype.Lookup(clientType); m != nil; m = m.Parent() {
			if m.Is(sniffed.String()) && m.Parent() != nil { // never agree by the root alone
				return client
			}
		}
	}
	if ext := strings.TrimPrefix(sniffed.Extension(), "."); attachmentTypes[ext] != "" {
		return ext
	}
	if clientOK {
		return client
	}
	return neutralExt
}

// ServedAs is how a stored file is served: its content type, from its extension only
// (never sniffed), and its Content-Disposition, "attachment" for every type a browser
// would show as a page or a document of its own ("" for pictures, video and audio).
func ServedAs(name string) (contentType, disposition string) {
	ext := strings.ToLower(strings.TrimPrefix(path.Ext(name), "."))
	contentType = attachmentTypes[ext]
	if contentType == "" {
		contentType = mime.TypeByExtension("." + ext) // names of the original backend
	}
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	if !inline(contentType) {
		disposition = "attachment"
	}
	return contentType, disposition
}

// inline reports whether a browser shows this type as media, never as a page: pictures
// (but SVG, which is a document that runs scripts), video and audio.
func inline(contentType string) bool {
	t, _, _ := mime.ParseMediaType(contentType)
	switch {
	case t == "image/svg+xml":
		return false
	case strings.HasPrefix(t, "image/"), strings.HasPrefix(t, "video/"), strings.HasPrefix(t, "audio/"):
		return true
	}
	return false
}

// ContentSecurityPolicy is sent with every stored file, with X-Content-Type-Options:
// nosniff: a sandbox without any right, so that a file opened directly cannot run as a
// page of the origin that serves it (inline styles only, for a browser's own picture
// view). Caddyfile.example sets the same for file_server.
const ContentSecurityPolicy = "sandbox; default-src 'none'; style-src 'unsafe-inline'"

// SetServingHeaders sets the headers every served file carries, for the file name.
func SetServingHeaders(h http.Header, name string) {
	contentType, disposition := ServedAs(name)
	h.Set("Content-Type", contentType)
	if disposition != "" {
		h.Set("Content-Disposition", disposition)
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
}
