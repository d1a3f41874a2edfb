package handlers

import "context"

// The group ops are being written (issue "Groups"); until then they answer BADOP.

func (a *API) setGroup(_ context.Context, c *call) *Response    { return rejection(c.req.Op, "BADOP", "") }
func (a *API) getGroup(_ context.Context, c *call) *Response    { return rejection(c.req.Op, "BADOP", "") }
func (a *API) editMembers(_ context.Context, c *call) *Response { return rejection(c.req.Op, "BADOP", "") }
func (a *API) setAdmin(_ context.Context, c *call) *Response    { return rejection(c.req.Op, "BADOP", "") }
func (a *API) delGroup(_ context.Context, c *call) *Response    { return rejection(c.req.Op, "BADOP", "") }
