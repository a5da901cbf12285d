package herd

import (
	"context"
	"net/url"
	"strings"
	"time"
)

// Event types of firmware.
const (
	EventFirmwareCreated = "firmware.created"
	EventSubjectFirmware = "firmware"
)

// MaxConfigPageLimit is the largest page of the config and firmware lists.
const MaxConfigPageLimit = 1000

// Firmware is the metadata of one firmware image of a tenant: devices
// download the image from URL and check it against SHA256 and Size. herd
// does not keep the image. (TenantID, Model, Version) is unique.
type Firmware struct {
	ID        int64     `json:"id,string"`
	TenantID  int64     `json:"tenant_id,string"`
	Model     string    `json:"model"`
	Version   string    `json:"version"`
	URL       string    `json:"url"`
	SHA256    string    `json:"sha256"`
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"created_at"`
}

// Validate reports whether the firmware can be created. SHA256 is
// lowered, so that two spellings of one digest are one.
func (f *Firmware) Validate() error {
	f.Model = strings.TrimSpace(f.Model)
	f.Version = strings.TrimSpace(f.Version)
	if f.TenantID == 0 {
		return Errorf(EINVALID, "tenant_id is required")
	}
	if err := checkRequiredText("model", f.Model, MaxModelLen); err != nil {
		return err
	} else if err := checkRequiredText("version", f.Version, MaxFirmwareLen); err != nil {
		return err
	} else if err := CheckText("url", f.URL, MaxURLLen); err != nil {
		return err
	}
	u, err := url.Parse(f.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Errorf(EINVALID, "url must be an absolute http or https URL, not %q", f.URL)
	}
	f.SHA256 = strings.ToLower(f.SHA256)
	if len(f.SHA256) != 64 || strings.Trim(f.SHA256, "0123456789abcdef") != "" {
		return Errorf(EINVALID, "sha256 must be 64 hexadecimal digits, the image's SHA-256")
	}
	if f.Size <= 0 {
		return Errorf(EINVALID, "size must be the image's size in bytes, more than 0")
	}
	return nil
}

// FirmwareService keeps firmware metadata. Firmware belongs to the whole
// tenant: anyone who sees a node of the tenant may read it, admins of the
// tenant's root create it.
type FirmwareService interface {
	// CreateFirmware returns ECONFLICT when the tenant has the model's
	// version already.
	CreateFirmware(ctx context.Context, f *Firmware) error
	FindFirmwareByID(ctx context.Context, id int64) (*Firmware, error)
	// FindFirmware lists a tenant's firmware in id order, of one model or
	// all (""), those after the id given.
	FindFirmware(ctx context.Context, tenantID int64, model string, after int64, limit int) (*ConfigPage[*Firmware], error)
}
